/*
 * handles: a hash of id -> (object, holders, closed), under one leaf lock.
 * Destructors run outside the lock.
 */
#include "handles.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define NBUCKETS 1024

struct entry {
	uint64_t id;
	void *obj;
	void (*destroy)(void *obj);
	int holders;        /* handles_lock */
	bool closed;        /* handles_lock */
	struct entry *next; /* handles_lock */
};

static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[NBUCKETS]; /* handles_lock */
static uint64_t next_id = 1;            /* handles_lock */

static struct entry **slot(uint64_t id)
{
	struct entry **p = &buckets[id % NBUCKETS];

	while (*p && (*p)->id != id)
		p = &(*p)->next;
	return p;
}

uint64_t handle_add(void *obj, void (*destroy)(void *obj))
{
	struct entry *e = calloc(1, sizeof(*e));

	if (!e)
		return 0;
	e->obj = obj;
	e->destroy = destroy;
	pthread_mutex_lock(&handles_lock);
	e->id = next_id++;
	e->next = buckets[e->id % NBUCKETS];
	buckets[e->id % NBUCKETS] = e;
	pthread_mutex_unlock(&handles_lock);
	return e->id;
}

void *handle_get(uint64_t id)
{
	struct entry *e;
	void *obj = NULL;

	pthread_mutex_lock(&handles_lock);
	e = *slot(id);
	if (e && !e->closed) {
		e->holders++;
		obj = e->obj;
	}
	pthread_mutex_unlock(&handles_lock);
	return obj;
}

/* Drop one holder (or the open itself); unlink and return the entry when it is done. */
static struct entry *release(uint64_t id, bool closing)
{
	struct entry **p, *e;

	pthread_mutex_lock(&handles_lock);
	p = slot(id);
	e = *p;
	if (e) {
		if (closing)
			e->closed = true;
		else
			e->holders--;
		if (e->closed && e->holders == 0)
			*p = e->next;
		else
			e = NULL;
	}
	pthread_mutex_unlock(&handles_lock);
	return e;
}

static void finish(struct entry *e)
{
	if (e) {
		e->destroy(e->obj);
		free(e);
	}
}

void handle_put(uint64_t id)
{
	finish(release(id, false));
}

void handle_close(uint64_t id)
{
	finish(release(id, true));
}
