/*
 * extent_cache: the text of allocated.json and changed-since/<older>.json.
 *
 * The answer for two snapshot views never changes while both exist, so it
 * is computed once and kept (keyed by the views' persistent identities, so
 * a snapshot taken again under the same name is a new key). Answers about
 * `current` change as its VM writes: they are kept for one second, enough
 * for a stat and the open that follows it to agree.
 */
#ifndef VSTORFS_FS_EXTENT_CACHE_H
#define VSTORFS_FS_EXTENT_CACHE_H

#include <stddef.h>

#include "fs/catalog.h"

struct blob {
	int refs;      /* atomic */
	size_t len;
	char *text;
};

/* older == NULL: allocated.json. A new reference to the text, or a negative errno. */
int fs_extents_json(struct fs_store *st, const struct store_volume *vol, const struct store_view *view,
		    const struct store_view *older, struct blob **out);
void blob_put(struct blob *b);

#endif
