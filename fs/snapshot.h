/*
 * snapshot: taking and deleting snapshots the way Proxmox VE 9 does on
 * thick LVM, and finishing an interrupted one at the next mount.
 *
 * Returns 0 or a negative errno that fs/ hands straight to the kernel:
 * -EINVAL bad name, -EEXIST existing snapshot, -ENOENT no such volume or
 * snapshot, -EOPNOTSUPP raw volume, -EBUSY LV in use, shared storage,
 * lvmlockd or "current", -ENOSPC no room, -EIO anything else (logged).
 */
#ifndef VSTORFS_FS_SNAPSHOT_H
#define VSTORFS_FS_SNAPSHOT_H

struct fs_options;

int snapshot_take(const struct fs_options *o, const char *vg, const char *volume, const char *snap);
int snapshot_remove(const struct fs_options *o, const char *vg, const char *volume, const char *snap);

/* Find operations interrupted by a crash in the mounted VGs and finish or undo them. */
int snapshot_recover(const struct fs_options *o);

#endif
