/*
 * l2_cache: one cache of L2 table slices for every open image, bounded in bytes
 * (chain_set_cache_limit), least recently used first out. Tables are
 * reference counted while a reader uses them, so eviction never frees a
 * table in use; loading happens outside the lock.
 */
#ifndef VSTORFS_L2_CACHE_H
#define VSTORFS_L2_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "layer_io.h"

struct l2_table {
	const uint8_t *data;   /* `size` bytes, big-endian entries */
};

/* The table at `off` of `owner`, read from io on a miss. 0 or -errno. */
int l2_cache_get(const void *owner, struct layer_io *io, uint64_t off, size_t size,
		 struct l2_table **out);
void l2_cache_put(struct l2_table *t);
/* Forget every table of owner (an image being closed; none may be in use). */
void l2_cache_drop(const void *owner);

#endif
