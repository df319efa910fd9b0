/*
 * extents_json: a view's changed or allocated extents, in the JSON form
 * `rbd diff --format=json` prints, whatever the store. See view_reader.h
 * for what the extents promise.
 */
#ifndef VSTORFS_EXTENTS_JSON_H
#define VSTORFS_EXTENTS_JSON_H

#include <stddef.h>

#include "store/view_reader.h"

/*
 * The ranges of `newer` that may differ from `older` (NULL: that hold
 * anything but never-written zeros), as malloc'd NUL-terminated JSON.
 * -EOPNOTSUPP when the store cannot tell, -EFBIG past max bytes, -EIO.
 */
int extents_json(struct view_reader *newer, struct view_reader *older, size_t max, char **out,
		 size_t *len);

#endif
