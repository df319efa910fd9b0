/*
 * snapshot_checks: the checks of mkdir and rmdir that need the tree, on
 * top of store_snapshot_check (store/snapshot_rules.h: read-only,
 * "current", the name rule). Run by the catalog for every store, under the
 * store's op lock, against a listing refreshed just before; the store
 * still answers for what changed behind the listing's back.
 *   -ENOENT  no such volume; rmdir of a snapshot the volume does not have
 *   -EEXIST  mkdir of a snapshot the volume already has
 */
#ifndef VSTORFS_FS_SNAPSHOT_CHECKS_H
#define VSTORFS_FS_SNAPSHOT_CHECKS_H

#include <stdbool.h>

#include "store/store.h"

int fs_snapshot_listing_check(const struct store_listing *l, const char *volume, const char *snap,
			      bool take);

#endif
