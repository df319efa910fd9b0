/* extent_cache: see extent_cache.h. */
#include "fs/extent_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fs/slot_cache.h"
#include "store/extents_json.h"

#define JSON_MAX (256u << 20)   /* a pathological map, not a real one, gets EFBIG */

void blob_put(struct blob *b)
{
	if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		free(b->text);
		free(b);
	}
}

/* The answers: blobs, the cache holding one reference to each. */
static int blob_get(void *value, void *out)
{
	struct blob *b = value;

	__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	*(struct blob **)out = b;
	return 0;
}

static void blob_free(void *value)
{
	blob_put(value);
}

static struct slot_cache_slot slots[256]; /* cache.lock */
static struct slot_cache cache = SLOT_CACHE(slots, 1, blob_get, blob_free);

int fs_extents_json(struct fs_store *st, const struct store_volume *vol, const struct store_view *view,
		    const struct store_view *older, struct blob **out)
{
	struct view_reader *r = NULL, *o = NULL;
	struct blob *b = NULL;
	char *key;
	int rc;

	if (asprintf(&key, "%s\n%s\n%s\n%s", st->store->name, vol->name, view->ident,
		     older ? older->ident : "") < 0)
		return -ENOMEM;
	if (slot_cache_get(&cache, key, out) == 0) {
		free(key);
		return 0;
	}
	rc = fs_store_view_reader(st, vol, view, &r);
	if (rc == 0 && older)
		rc = fs_store_view_reader(st, vol, older, &o);
	if (rc == 0 && !(b = calloc(1, sizeof(*b))))
		rc = -ENOMEM;
	if (rc == 0) {
		b->refs = 1;
		rc = extents_json(r, o, JSON_MAX, &b->text, &b->len);
		if (rc < 0) {
			free(b);
			vlog(LOG_ERR, "%s/%s@%s: %s extents%s%s: %s", st->store->name, vol->name, view->name,
			     older ? "changed" : "allocated", older ? " since " : "",
			     older ? older->name : "", strerror(-rc));
		}
	}
	view_reader_put(r);
	view_reader_put(o);
	if (rc < 0) {
		free(key);
		return rc;
	}
	__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED); /* the cache's */
	slot_cache_put(&cache, key, b, view->snapshot);
	*out = b;
	return 0;
}
