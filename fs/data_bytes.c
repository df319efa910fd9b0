/* data_bytes: see data_bytes.h. */
#include "fs/data_bytes.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "fs/slot_cache.h"

/* The answers: a malloc'd uint64_t each. */
static int bytes_get(void *value, void *out)
{
	*(uint64_t *)out = *(const uint64_t *)value;
	return 0;
}

static struct slot_cache_slot slots[512]; /* cache.lock */
static struct slot_cache cache = SLOT_CACHE(slots, 1, bytes_get, free);

/* Bytes of data in [start, start + len) by the map: 0 and the bytes, or
 * -errno (the reader logged it). */
static int count(struct view_reader *r, uint64_t start, uint64_t len, uint64_t *bytes)
{
	uint64_t pos = start, end, data = 0;

	*bytes = 0;
	if (start >= r->size)
		return 0;
	end = len > r->size - start ? r->size : start + len;
	if (!r->ops->map) {
		*bytes = end - start;
		return 0;
	}
	while (pos < end) {
		struct view_extent e;
		int rc = r->ops->map(r, pos, end - pos, &e);

		if (rc < 0)
			return rc;
		if (e.len == 0)
			return -EIO;
		if (e.len > end - pos)
			e.len = end - pos;
		if (e.kind != VIEW_EXT_ZERO)
			data += e.len;
		pos += e.len;
	}
	*bytes = data;
	return 0;
}

static int sum_existing(void *arg, uint64_t off, uint64_t len, bool exists)
{
	(void)off;
	if (exists)
		*(uint64_t *)arg += len;
	return 0;
}

/* Bytes of the whole view its changed(NULL) calls existing (allocated.json's
 * ranges, without the text). */
static int count_allocated(struct view_reader *r, uint64_t *bytes)
{
	*bytes = 0;
	return r->ops->changed(r, NULL, sum_existing, bytes);
}

/* One answer, cached: a snapshot's for the mount, current's for a second.
 * A failure is not kept (the next stat asks again) and counts the range
 * as data, so st_blocks is never 0 for a view that may hold some. */
static uint64_t cached(struct fs_store *st, const struct store_volume *vol, const struct store_view *view,
		       uint64_t start, uint64_t len, bool allocated)
{
	struct view_reader *r;
	uint64_t bytes = 0, *kept;
	char *key;
	int rc;

	if (asprintf(&key, "%s\n%s\n%s\n%llu\n%llu%s", st->store->name, vol->name, view->ident,
		     (unsigned long long)start, (unsigned long long)len, allocated ? "\na" : "") < 0)
		return 0;
	if (slot_cache_get(&cache, key, &bytes) == 0) {
		free(key);
		return bytes;
	}
	if (fs_store_view_reader(st, vol, view, &r) < 0) {
		free(key);
		return 0;
	}
	allocated = allocated && r->used_is_allocated && r->ops->changed;
	rc = allocated ? count_allocated(r, &bytes) : count(r, start, len, &bytes);
	if (rc < 0) {
		bytes = start >= r->size ? 0 : len > r->size - start ? r->size - start : len;
		free(key);
	} else if ((kept = malloc(sizeof(*kept)))) {
		*kept = bytes;
		slot_cache_put(&cache, key, kept, view->snapshot);
	} else {
		free(key);
	}
	view_reader_put(r);
	return bytes;
}

uint64_t fs_data_bytes(struct fs_store *st, const struct store_volume *vol,
		       const struct store_view *view, uint64_t start, uint64_t len)
{
	return cached(st, vol, view, start, len, false);
}

uint64_t fs_view_data_bytes(struct fs_store *st, const struct store_volume *vol, const struct store_view *view)
{
	return cached(st, vol, view, 0, view->size, true);
}
