/*
 * l2_cache: a hash table with chaining plus an LRU list, under one mutex.
 * Lock order: cache_lock is a leaf lock; no I/O while holding it.
 */
#include "l2_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"

#define NBUCKETS 4096

struct entry {
	struct l2_table t;          /* first: l2_cache_put casts back */
	const void *owner;
	uint64_t off;
	size_t size;
	int refs;                   /* cache_lock */
	struct entry *hnext;        /* cache_lock */
	struct entry *prev, *next;  /* LRU, most recent first; cache_lock */
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[NBUCKETS];  /* cache_lock */
static struct entry *lru_head, *lru_tail; /* cache_lock */
static size_t cached_bytes;               /* cache_lock */
static size_t cache_limit = 32u << 20;    /* cache_lock */

void chain_set_cache_limit(size_t bytes)
{
	pthread_mutex_lock(&cache_lock);
	cache_limit = bytes;
	pthread_mutex_unlock(&cache_lock);
}

static size_t bucket(const void *owner, uint64_t off)
{
	uint64_t h = (uintptr_t)owner * 0x9e3779b97f4a7c15ULL ^ off * 0xc2b2ae3d27d4eb4fULL;

	return (h >> 32) % NBUCKETS;
}

static void lru_unlink(struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(struct entry *e)
{
	e->next = lru_head;
	e->prev = NULL;
	if (lru_head)
		lru_head->prev = e;
	lru_head = e;
	if (!lru_tail)
		lru_tail = e;
}

static void remove_entry(struct entry *e)
{
	struct entry **p = &buckets[bucket(e->owner, e->off)];

	while (*p != e)
		p = &(*p)->hnext;
	*p = e->hnext;
	lru_unlink(e);
	cached_bytes -= e->size;
}

static struct entry *find(const void *owner, uint64_t off)
{
	for (struct entry *e = buckets[bucket(owner, off)]; e; e = e->hnext)
		if (e->owner == owner && e->off == off)
			return e;
	return NULL;
}

/* Free unused tables, oldest first, until under the limit. Returns them to free outside the lock. */
static struct entry *evict(void)
{
	struct entry *victims = NULL;

	for (struct entry *e = lru_tail, *prev; e && cached_bytes > cache_limit; e = prev) {
		prev = e->prev;
		if (e->refs)
			continue;
		remove_entry(e);
		e->hnext = victims;
		victims = e;
	}
	return victims;
}

static void free_list(struct entry *e)
{
	while (e) {
		struct entry *n = e->hnext;

		free((void *)e->t.data);
		free(e);
		e = n;
	}
}

int l2_cache_get(const void *owner, struct layer_io *io, uint64_t off, size_t size,
		 struct l2_table **out)
{
	struct entry *e, *mine, *victims;
	uint8_t *data;
	int rc;

	pthread_mutex_lock(&cache_lock);
	e = find(owner, off);
	if (e) {
		e->refs++;
		lru_unlink(e);
		lru_front(e);
		pthread_mutex_unlock(&cache_lock);
		*out = &e->t;
		return 0;
	}
	pthread_mutex_unlock(&cache_lock);

	data = malloc(size);
	mine = calloc(1, sizeof(*mine));
	if (!data || !mine) {
		free(data);
		free(mine);
		return -ENOMEM;
	}
	rc = layer_pread(io, data, size, off);
	if (rc) {
		free(data);
		free(mine);
		return rc;
	}
	mine->t.data = data;
	mine->owner = owner;
	mine->off = off;
	mine->size = size;
	mine->refs = 1;

	pthread_mutex_lock(&cache_lock);
	e = find(owner, off);
	if (e) { /* another reader loaded it meanwhile */
		e->refs++;
		pthread_mutex_unlock(&cache_lock);
		free(data);
		free(mine);
		*out = &e->t;
		return 0;
	}
	size_t b = bucket(owner, off);

	mine->hnext = buckets[b];
	buckets[b] = mine;
	lru_front(mine);
	cached_bytes += size;
	victims = evict();
	pthread_mutex_unlock(&cache_lock);
	free_list(victims);
	*out = &mine->t;
	return 0;
}

void l2_cache_put(struct l2_table *t)
{
	struct entry *e = (struct entry *)t, *victims;

	pthread_mutex_lock(&cache_lock);
	e->refs--;
	victims = cached_bytes > cache_limit ? evict() : NULL;
	pthread_mutex_unlock(&cache_lock);
	free_list(victims);
}

void l2_cache_drop(const void *owner)
{
	struct entry *victims = NULL;

	pthread_mutex_lock(&cache_lock);
	for (struct entry *e = lru_head, *next; e; e = next) {
		next = e->next;
		if (e->owner != owner)
			continue;
		remove_entry(e);
		e->hnext = victims;
		victims = e;
	}
	pthread_mutex_unlock(&cache_lock);
	free_list(victims);
}
