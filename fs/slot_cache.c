/* slot_cache: see slot_cache.h. */
#include "fs/slot_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int slot_cache_get(struct slot_cache *c, const char *key, void *out)
{
	time_t now = time(NULL);
	int rc = -ENOENT;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < c->nslots && rc == -ENOENT; i++) {
		struct slot_cache_slot *s = &c->slots[i];

		if (s->key && !strcmp(s->key, key) && (s->forever || now - s->made < c->ttl_s))
			rc = c->value_get(s->value, out);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void slot_cache_put(struct slot_cache *c, char *key, void *value, bool forever)
{
	struct slot_cache_slot *s = NULL;

	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < c->nslots && !s; i++)
		if (!c->slots[i].key || !strcmp(c->slots[i].key, key))
			s = &c->slots[i];
	if (!s)
		s = &c->slots[c->next_victim++ % (unsigned)c->nslots];
	free(s->key);
	if (s->value)
		c->value_free(s->value);
	s->key = key;
	s->value = value;
	s->forever = forever;
	s->made = time(NULL);
	pthread_mutex_unlock(&c->lock);
}
