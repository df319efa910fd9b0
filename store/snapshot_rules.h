/*
 * snapshot_rules: the checks every store's mkdir and rmdir share, written
 * once. fs/ (fs/snapshot_ops.c) applies them to every request before the
 * store runs; tools that call a store directly (rbdcat) apply them too.
 * A store keeps only the checks that need its platform (the authoritative
 * EEXIST/ENOENT against the store itself, EOPNOTSUPP, EBUSY, ENOSPC...).
 *
 * The errnos, in the order they are checked (store.h, README "Snapshots:
 * mkdir and rmdir"):
 *   -EROFS   the mount is read-only (cfg->read_only)
 *   -EEXIST  mkdir "current" (it always exists)
 *   -EBUSY   rmdir "current" (the live view cannot go)
 *   -EINVAL  mkdir of a name outside store_snapshot_name_valid()
 */
#ifndef VSTORFS_STORE_SNAPSHOT_RULES_H
#define VSTORFS_STORE_SNAPSHOT_RULES_H

#include <stdbool.h>

#include "store/store.h"

/* 0 when snapshot `snap` may be taken (take) or removed (!take) on a store
 * configured by cfg (may be NULL), else the negative errno above. */
int store_snapshot_check(const struct store_config *cfg, bool take, const char *snap);

#endif
