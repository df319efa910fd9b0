/*
 * Command line and -o option parsing for the vstorfs daemon. The same
 * syntax is what mount(8) hands mount.vstorfs, so fstab lines work.
 */
#ifndef VSTORFS_FS_OPTIONS_H
#define VSTORFS_FS_OPTIONS_H

#include <stdbool.h>
#include <sys/types.h>

#include "store/store.h"

struct fs_options {
	char *source;          /* "pve", "pve,/var/lib/vz,rbd:vmpool" or "all" (store/store_set.h) */
	char *mountpoint;      /* absolute path */
	struct store_config store; /* what the stores see: ro, shared_snapshots, and
	                            * the options their kinds parsed (store_registry.h) */
	bool foreground;
	bool debug;
	bool read_only;
	bool allow_other;
	bool shared_snapshots; /* allow mkdir/rmdir on shared or lvmlockd VGs */
	uid_t uid;
	gid_t gid;
	mode_t umask;          /* applied to 0444 files / 0555 dirs; default 077, 022 with allow_other */
	unsigned rescan_secs;  /* how often VG metadata is checked for changes */
	unsigned readahead_kb; /* the mount's readahead window (fs/readahead_window.h); 0: the kernel's */
	bool fuse_debug;       /* -d: libfuse's own request tracing */
	bool current_cached;   /* current_io=cache: current through the page cache (MAP_SHARED works) */
	bool partitions_visible; /* partitions=visible: readdir of a view lists .partitions */
	bool umask_set;        /* umask= given (else allow_other makes it 022) */
};

/* Parse argv. Returns 0, or -1 after printing a clear message to stderr. */
int fs_options_parse(int argc, char **argv, struct fs_options *o);
void fs_options_free(struct fs_options *o);
void fs_options_usage(const char *prog);
/* Is path a vstorfs mount (/proc/self/mountinfo)? The topmost one's source
 * into src (size n) and its device into dev when so; either may be NULL. */
bool fs_options_mounted_here(const char *path, char *src, size_t n, dev_t *dev);

#endif
