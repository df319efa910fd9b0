/*
 * store: the one interface between the tree (fs/) and the places VM disks
 * live. A store is one source of a mount: an LVM volume group (lvm/), a
 * directory (dir/), an RBD pool (rbd/). fs/ knows nothing else about them.
 *
 * What a store promises:
 *  - scan() returns an immutable listing: the store's volumes, sorted by
 *    name, and for each its views: views[0] is "current", then one per
 *    snapshot, oldest first. The listing never changes once built; a later
 *    scan() builds a new one. fs/ serves lookups from the newest listing
 *    and frees old ones when no reader holds them.
 *  - changed() is cheap (one metadata read, never a full scan): 1 when a
 *    new scan() would list something different, 0 when not, -ENOENT when
 *    the store itself is gone. The rescan thread calls it every period.
 *  - open_view() returns a view_reader for one view of a listing. The
 *    reader keeps reading the bytes that view had, even after the listing
 *    is replaced (a snapshot view's bytes never change while it exists;
 *    current's change as the VM writes).
 *  - A view's ident is persistent: the same across remounts and daemon
 *    restarts, unchanged when a neighbouring snapshot is removed (the
 *    view's bytes did not change), and different when a snapshot is removed
 *    and another is taken under the same name.
 *  - snapshot_take/snapshot_remove change the store exactly as the platform
 *    does, crash-safely; recover() finishes or undoes an operation a crash
 *    interrupted. fs/ calls recover() before the first scan.
 *
 * Threads (fs/catalog.c holds the locks; its lock order is written there):
 *  - One store's scan, changed, snapshot_take, snapshot_remove and recover
 *    never run at once: fs/ serializes them under that store's op lock, so
 *    a store needs no lock of its own for state only they touch (rbd's
 *    image cache, dir's inotify descriptor). A scan that would publish
 *    while an operation runs is skipped, not queued.
 *  - Different stores run all of these concurrently: stores share no
 *    unlocked mutable state.
 *  - open_view and the view readers run from FUSE threads at any time,
 *    beside all of the above and each other; listing_free runs on the
 *    thread dropping the listing's last reference.
 *
 * Errors are negative errnos handed to the kernel unchanged. The snapshot
 * operations answer the same on every store (README "Snapshots: mkdir and
 * rmdir"); the checks all stores share run once, before the store's op
 * (store/snapshot_rules.h, fs/snapshot_checks.h), in this order:
 *   -EROFS   mounted read-only
 *   -EEXIST  mkdir "current";  -EBUSY rmdir "current"
 *   -EINVAL  mkdir of a name store_snapshot_name_valid() refuses
 *   -ENOENT  no such volume, or rmdir of no such snapshot
 *   -EEXIST  mkdir of an existing snapshot
 * and then the store's own: -EEXIST/-ENOENT again for what changed behind
 * the listing's back, -EOPNOTSUPP the volume cannot have snapshots (raw),
 * -EBUSY in use / shared storage / a platform lock held too long, -EACCES
 * no permission, -ENOSPC no room, -EIO anything else (the store logs why,
 * once). EACCES for users other than root comes from the kernel
 * (default_permissions), before any of this.
 */
#ifndef VSTORFS_STORE_H
#define VSTORFS_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "store/view_reader.h"

#define STORE_KINDS_MAX 8

/* What the mount options say to stores. A store's own options (devices=,
 * ceph_*=) are its kind's (store_kind.option below): each kind keeps them
 * in a struct of its own, opaque here, that store_registry_opts() finds;
 * fs/options.c knows none of them. */
struct store_config {
	bool read_only;         /* no snapshot operations, no recovery */
	bool shared_snapshots;  /* allow operations on shared storages */
	const char *pve_storage_cfg; /* Proxmox's storage.cfg (default /etc/pve/storage.cfg) */
	void *kind_opts[STORE_KINDS_MAX]; /* by place in store_kinds[]; NULL: the kind's defaults */
};

/*
 * The stat contract (fs/tree.c fs_fill_attr applies it; the README's backup
 * section states it for users). A store answers from what it knows:
 *  - size: the virtual size.
 *  - used: bytes the view's data occupies: what its layers hold for it
 *    (LV extents of its layers, a file's st_blocks), at most size. 0
 *    means "not known here": fs/ then counts, when stat asks and cached,
 *    what SEEK_DATA calls data (the reader's map), or with the reader's
 *    used_is_allocated what its changed(NULL) reports existing (RBD: the
 *    extents `rbd diff` reports, which no scan should pay for). st_blocks
 *    is used rounded up to 512 bytes, 0 only when the file holds no data.
 *  - mtime, mtime_nsec: for a snapshot, when it was taken, at the source's
 *    own precision (qcow2 date_sec/date_nsec, rbd_snap_get_timestamp, a
 *    file layer's birth time); a store that only has seconds (LVM) derives
 *    the nanoseconds from something stable, the view's ident, so they never
 *    change across remounts. Ignored for current: its mtime and ctime are
 *    the time of each stat, since a VM may be writing it through a
 *    descriptor it keeps open, and no store can tell when it last did.
 */
struct store_view {
	const char *name;   /* "current" or the snapshot's name */
	const char *ident;  /* persistent identity (see above); never NULL */
	uint64_t size;      /* virtual size in bytes */
	int64_t mtime;      /* snapshot: when it was taken (seconds); current: ignored */
	uint64_t used;      /* bytes the view's data occupies (st_blocks); 0 = fs/ counts */
	bool snapshot;      /* immutable while it exists: the kernel may cache it */
	int32_t mtime_nsec; /* nanoseconds of mtime, [0, 1e9) */
	void *priv;         /* the store's */
};

struct store_volume {
	const char *name;
	int64_t mtime;      /* the volume's creation time, 0 if unknown */
	int nviews;         /* views[0] is current */
	struct store_view *views;
	void *priv;
};

struct store_listing {
	int nvols;
	struct store_volume *vols; /* sorted by name (strcmp) */
	void *priv;
	/* statfs: the storage's capacity and free space in bytes as of the
	 * scan (VG size/free, the directory's statvfs, the RBD cluster's raw
	 * space); 0 = not known. */
	uint64_t capacity, available;
};

/* Progress of a long operation (a merge): bytes done of total. May be NULL. */
struct store_progress {
	void (*report)(void *arg, uint64_t done, uint64_t total);
	void *arg;
};

struct store;

struct store_ops {
	const char *kind;   /* "lvm", "dir", "rbd": for logs */
	int (*scan)(struct store *s, struct store_listing **out);
	void (*listing_free)(struct store *s, struct store_listing *l);
	int (*changed)(struct store *s, const struct store_listing *l);
	int (*open_view)(struct store *s, const struct store_listing *l, const struct store_volume *vol,
			 const struct store_view *view, struct view_reader **out);
	/* NULL when the store cannot take snapshots at all (-EROFS). Called
	 * after the shared checks above; the store's op lock held. */
	int (*snapshot_take)(struct store *s, const char *volume, const char *snap,
			     const struct store_progress *p);
	int (*snapshot_remove)(struct store *s, const char *volume, const char *snap,
			       const struct store_progress *p);
	int (*recover)(struct store *s);
	void (*close)(struct store *s);
};

struct store {
	const struct store_ops *ops;
	char *name;         /* the top-level directory: VG name, directory basename, pool */
	const struct store_config *cfg;
	void *priv;
};

/*
 * A kind of store: what the registry (store/store_registry.h) knows of it.
 * Each store's header declares one (lvm_store_kind, dir_store_kind,
 * rbd_store_kind); store_registry.c lists them.
 */
enum store_opt { STORE_OPT_NOT_MINE = 0, STORE_OPT_TAKEN = 1, STORE_OPT_MORE = 2 };

struct store_kind {
	const char *name;       /* "lvm", "dir", "rbd": store_ops.kind of its stores */
	/* The SOURCE words it serves: those starting with prefix (stripped
	 * before open), or those matches() accepts; neither: every word no
	 * other kind takes (one kind only, listed last). */
	const char *prefix;
	bool (*matches)(const char *word);
	int (*open)(const char *word, const struct store_config *cfg, struct store **out);
	/* For SOURCE "all": the words of every store it sees now, each also its
	 * store's name (free each and the array); NULL: "all" has none of it. */
	int (*list_all)(const struct store_config *cfg, char ***words);
	/* One -o option into *opts (the kind's own struct, allocated on its
	 * first option): STORE_OPT_NOT_MINE, _TAKEN, _MORE (taken, and the next
	 * option is offered here first with more = true: devices=A,/dev/B), or
	 * -1 after printing why it is bad. NULL: it has no options. */
	int (*option)(void **opts, const char *opt, bool more);
	void *(*options_dup)(const void *opts);   /* NULL when memory is short */
	void (*options_free)(void *opts);
	const char *source_usage; /* its SOURCE words, for --help */
	const char *usage;        /* its options, for --help ("" for none) */
	/* Not NULL: not built in; why, for a SOURCE naming it. */
	const char *missing;
};

/* Proxmox's rule for new snapshot names (pve-configid: ^[A-Za-z][A-Za-z0-9_-]+$,
 * at most 40 characters, never "current"): what every store's mkdir accepts. */
bool store_snapshot_name_valid(const char *name);
/* Can a snapshot the platform lists be a view directory? Any name but "",
 * ".", "..", "current" (the live view) and names with '/': reading shows
 * every snapshot the platform would list, whatever mkdir would accept. */
bool store_view_name_ok(const char *name);
/* flock(LOCK_EX) on path (created 0644), waiting up to timeout_s seconds:
 * an fd to close to unlock, -EBUSY on timeout (logged), or -errno. */
int store_lock_file(const char *path, int timeout_s);

/* Helpers over the sorted listing. */
const struct store_volume *store_listing_find(const struct store_listing *l, const char *volume);
const struct store_view *store_volume_find_view(const struct store_volume *v, const char *name);

#endif
