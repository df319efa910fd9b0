/* log_cause: a small hash of subject -> last cause, under one leaf lock. */
#include "common/log_cause.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 1024

struct entry {
	char *subject, *cause;
	uint64_t seq;           /* insertion order, for forgetting the oldest */
	struct entry *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[NBUCKETS]; /* lock */
static int count;                       /* lock */
static uint64_t seq;                    /* lock */

static unsigned hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % NBUCKETS;
}

static void entry_free(struct entry *e)
{
	free(e->subject);
	free(e->cause);
	free(e);
}

/* Drop the oldest entry; lock held. */
static void forget_oldest(void)
{
	struct entry **best = NULL;

	for (int b = 0; b < NBUCKETS; b++)
		for (struct entry **p = &buckets[b]; *p; p = &(*p)->next)
			if (!best || (*p)->seq < (*best)->seq)
				best = p;
	if (best) {
		struct entry *e = *best;

		*best = e->next;
		entry_free(e);
		count--;
	}
}

bool log_cause_new(const char *subject, const char *cause)
{
	struct entry **p, *e;
	bool fresh = true;

	pthread_mutex_lock(&lock);
	for (p = &buckets[hash(subject)]; *p && strcmp((*p)->subject, subject); p = &(*p)->next)
		;
	if (*p) {
		char *c = strcmp((*p)->cause, cause) ? strdup(cause) : NULL;

		fresh = c != NULL;
		if (c) {
			free((*p)->cause);
			(*p)->cause = c;
		}
	} else if ((e = calloc(1, sizeof(*e)))) {
		if (count >= LOG_CAUSE_MAX)
			forget_oldest();
		e->subject = strdup(subject);
		e->cause = strdup(cause);
		if (e->subject && e->cause) {
			e->seq = seq++;
			e->next = buckets[hash(subject)];
			buckets[hash(subject)] = e;
			count++;
		} else {
			entry_free(e);
		}
	}
	pthread_mutex_unlock(&lock);
	return fresh;
}

void log_cause_clear(const char *subject)
{
	struct entry **p, *e = NULL;

	pthread_mutex_lock(&lock);
	for (p = &buckets[hash(subject)]; *p && strcmp((*p)->subject, subject); p = &(*p)->next)
		;
	if (*p) {
		e = *p;
		*p = e->next;
		count--;
	}
	pthread_mutex_unlock(&lock);
	if (e)
		entry_free(e);
}
