/*
 * partition_cache: the partitions of a view's disk.raw (part<N>.raw).
 *
 * libblkid probes a file descriptor, and the only descriptor holding a
 * view's flat bytes is the view's own disk.raw in this very mount. So the
 * daemon opens it through the mountpoint; the kernel hands those reads
 * back to other FUSE worker threads. It opens it by inode number in a
 * hidden directory only the daemon itself may look into
 * (MOUNT/FS_BYINO_DIR/<hex inode>), not by its path: a lookup of
 * part<N>.raw holds the view directory's lock in the kernel, and a lookup
 * of disk.raw in the same directory would wait for it. The probing thread waits for them,
 * so probes are serialised and a probe that cannot start within a few
 * seconds gives up (no partitions this time) rather than tie up threads.
 * Snapshot views are probed once; current again after two seconds.
 */
#ifndef VSTORFS_FS_PARTITION_CACHE_H
#define VSTORFS_FS_PARTITION_CACHE_H

#include <stdint.h>

#include "common/partitions.h"
#include "store/store.h"

/* NULL: no partition files (a kernel without parallel directory operations). */
void fs_partitions_init(const char *mountpoint);
#define FS_BYINO_DIR ".vstorfs-by-ino"

/* A copy of the table of the view whose disk.raw is inode disk_ino
 * (release with partitions_release), or a negative errno. */
int fs_partitions(const char *store, const char *volume, const struct store_view *view,
		  uint64_t disk_ino, struct partition_table *out);

#endif
