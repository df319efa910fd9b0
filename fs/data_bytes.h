/*
 * data_bytes: how many bytes of a range of a view hold data, in the sense
 * SEEK_DATA uses (every run the reader's map does not call ZERO), for
 * st_blocks where the store does not know (store.h, the stat contract):
 * part files, views whose layers are shared (internal snapshots), RBD
 * views (whose listing diffs no image).
 *
 * Answers about snapshot views never change and are kept for the life of
 * the mount (keyed by the view's persistent ident); answers about current
 * are kept for one second, as the JSON files are (fs/extent_cache.h).
 */
#ifndef VSTORFS_FS_DATA_BYTES_H
#define VSTORFS_FS_DATA_BYTES_H

#include <stdint.h>

#include "fs/catalog.h"

/* Bytes of data in [start, start + len) of view; a store without a map
 * counts everything. A failure (logged by the reader) counts the range
 * as data and is not cached. */
uint64_t fs_data_bytes(struct fs_store *st, const struct store_volume *vol,
		       const struct store_view *view, uint64_t start, uint64_t len);
/* The same for the whole view (disk.raw); a reader with used_is_allocated
 * counts the ranges its changed(NULL) reports existing instead (RBD: what
 * `rbd diff` and allocated.json report). */
uint64_t fs_view_data_bytes(struct fs_store *st, const struct store_volume *vol, const struct store_view *view);

#endif
