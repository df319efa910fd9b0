/* extent_cache: see extent_cache.h. */
#include "fs/extent_cache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "store/extents_json.h"

#define CACHE_SLOTS 256
#define JSON_MAX (256u << 20)   /* a pathological map, not a real one, gets EFBIG */

struct slot {
	char *key;
	struct blob *blob;
	bool forever;
	time_t made;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[CACHE_SLOTS];   /* cache_lock */
static unsigned next_victim;             /* cache_lock */

void blob_put(struct blob *b)
{
	if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		free(b->text);
		free(b);
	}
}

static struct blob *lookup(const char *key)
{
	time_t now = time(NULL);
	struct blob *b = NULL;

	pthread_mutex_lock(&cache_lock);
	for (int i = 0; i < CACHE_SLOTS && !b; i++) {
		if (!slots[i].key || strcmp(slots[i].key, key))
			continue;
		if (slots[i].forever || now - slots[i].made < 1) {
			b = slots[i].blob;
			__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
		}
	}
	pthread_mutex_unlock(&cache_lock);
	return b;
}

static void insert(char *key, struct blob *b, bool forever)
{
	struct slot *s = NULL;

	pthread_mutex_lock(&cache_lock);
	for (int i = 0; i < CACHE_SLOTS && !s; i++)
		if (!slots[i].key || !strcmp(slots[i].key, key))
			s = &slots[i];
	if (!s)
		s = &slots[next_victim++ % CACHE_SLOTS];
	free(s->key);
	blob_put(s->blob);
	s->key = key;
	s->blob = b;
	__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	s->forever = forever;
	s->made = time(NULL);
	pthread_mutex_unlock(&cache_lock);
}

int fs_extents_json(struct fs_store *st, const struct store_volume *vol, const struct store_view *view,
		    const struct store_view *older, struct blob **out)
{
	struct view_reader *r = NULL, *o = NULL;
	struct blob *b;
	char *key;
	int rc;

	if (asprintf(&key, "%s\n%s\n%s\n%s", st->store->name, vol->name, view->ident,
		     older ? older->ident : "") < 0)
		return -ENOMEM;
	if ((b = lookup(key))) {
		free(key);
		*out = b;
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
	insert(key, b, view->snapshot);
	*out = b;
	return 0;
}
