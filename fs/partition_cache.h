/*
 * partition_cache: the partitions of a view's disk.raw (part<N>.raw).
 *
 * libblkid probes a file descriptor, and the only descriptor holding a
 * view's flat bytes is the view's own disk.raw in this very mount. So the
 * daemon opens it through the mountpoint; the kernel hands those reads
 * back to other FUSE worker threads. The probing thread waits for them,
 * so probes are serialised and a probe that cannot start within a few
 * seconds gives up (no partitions this time) rather than tie up threads.
 * Snapshot views are probed once; current again after two seconds.
 */
#ifndef VSTORFS_FS_PARTITION_CACHE_H
#define VSTORFS_FS_PARTITION_CACHE_H

#include "common/partitions.h"
#include "store/store.h"

void fs_partitions_init(const char *mountpoint);
/* A copy of the table (release with partitions_release), or a negative errno. */
int fs_partitions(const char *store, const char *volume, const struct store_view *view,
		  struct partition_table *out);

#endif
