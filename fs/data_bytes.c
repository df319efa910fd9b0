/* data_bytes: see data_bytes.h. */
#include "fs/data_bytes.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 512

struct slot {
	char *key;      /* store \n volume \n ident \n start \n len */
	uint64_t bytes;
	bool forever;
	time_t made;
};

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[SLOTS];   /* slots_lock */
static unsigned next_victim;       /* slots_lock */

static bool lookup(const char *key, uint64_t *bytes)
{
	time_t now = time(NULL);
	bool hit = false;

	pthread_mutex_lock(&slots_lock);
	for (int i = 0; i < SLOTS && !hit; i++) {
		if (slots[i].key && !strcmp(slots[i].key, key) &&
		    (slots[i].forever || now - slots[i].made < 1)) {
			*bytes = slots[i].bytes;
			hit = true;
		}
	}
	pthread_mutex_unlock(&slots_lock);
	return hit;
}

static void insert(char *key, uint64_t bytes, bool forever)
{
	struct slot *s = NULL;

	pthread_mutex_lock(&slots_lock);
	for (int i = 0; i < SLOTS && !s; i++)
		if (!slots[i].key || !strcmp(slots[i].key, key))
			s = &slots[i];
	if (!s)
		s = &slots[next_victim++ % SLOTS];
	free(s->key);
	s->key = key;
	s->bytes = bytes;
	s->forever = forever;
	s->made = time(NULL);
	pthread_mutex_unlock(&slots_lock);
}

static uint64_t count(struct view_reader *r, uint64_t start, uint64_t len)
{
	uint64_t pos = start, end, data = 0;

	if (start >= r->size)
		return 0;
	end = len > r->size - start ? r->size : start + len;
	if (!r->ops->map)
		return end - start;
	while (pos < end) {
		struct view_extent e;

		if (r->ops->map(r, pos, end - pos, &e) < 0 || e.len == 0)
			return 0;
		if (e.len > end - pos)
			e.len = end - pos;
		if (e.kind != VIEW_EXT_ZERO)
			data += e.len;
		pos += e.len;
	}
	return data;
}

uint64_t fs_data_bytes(struct fs_store *st, const struct store_volume *vol,
		       const struct store_view *view, uint64_t start, uint64_t len)
{
	struct view_reader *r;
	uint64_t bytes = 0;
	char *key;

	if (asprintf(&key, "%s\n%s\n%s\n%llu\n%llu", st->store->name, vol->name, view->ident,
		     (unsigned long long)start, (unsigned long long)len) < 0)
		return 0;
	if (lookup(key, &bytes)) {
		free(key);
		return bytes;
	}
	if (fs_store_view_reader(st, vol, view, &r) < 0) {
		free(key);
		return 0;
	}
	bytes = count(r, start, len);
	view_reader_put(r);
	insert(key, bytes, view->snapshot);
	return bytes;
}
