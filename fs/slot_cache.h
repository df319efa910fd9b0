/*
 * slot_cache: a small fixed-size cache of answers keyed by a string, the
 * one behind fs/data_bytes.c, fs/extent_cache.c and fs/partition_cache.c.
 *
 * An answer about a snapshot view never changes while the view exists
 * (the key holds its persistent ident), so it is kept "forever" (until
 * evicted); an answer about current is kept ttl_s seconds, enough for a
 * stat and the open that follows it to agree. When every slot is taken,
 * the slots are reused round-robin. Lookups scan all slots: the caches
 * hold a few hundred answers, each costing a scan of its view to make.
 *
 * Thread-safe: c->lock guards the slots; value_get and value_free run
 * under it and take no lock (callers may hold theirs: probe_lock is taken
 * before the partition cache's).
 */
#ifndef VSTORFS_FS_SLOT_CACHE_H
#define VSTORFS_FS_SLOT_CACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

struct slot_cache_slot {
	char *key;          /* NULL: free */
	void *value;        /* the cache's; freed with value_free */
	bool forever;
	time_t made;
};

struct slot_cache {
	struct slot_cache_slot *slots; /* lock */
	int nslots;
	int ttl_s;          /* how long an answer that is not forever is kept */
	/* Hand a kept value to the caller (a copy, a new reference), under
	 * lock: 0 or a negative errno. */
	int (*value_get)(void *value, void *out);
	void (*value_free)(void *value);
	pthread_mutex_t lock;
	unsigned next_victim; /* lock */
};

#define SLOT_CACHE(slot_array, ttl, get, free_fn) { \
	.slots = (slot_array), .nslots = (int)(sizeof(slot_array) / sizeof((slot_array)[0])), \
	.ttl_s = (ttl), .value_get = (get), .value_free = (free_fn), .lock = PTHREAD_MUTEX_INITIALIZER }

/* The answer kept for key, through value_get into out: 0, -ENOENT when
 * none is (or it expired), or value_get's error. */
int slot_cache_get(struct slot_cache *c, const char *key, void *out);
/* Keep value under key (replacing an answer of the same key); takes over
 * both, and frees them when they go. */
void slot_cache_put(struct slot_cache *c, char *key, void *value, bool forever);

#endif
