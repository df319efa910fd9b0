/* io_gate: see io_gate.h. One mutex per set; a condition per gate. */
#include "common/io_gate.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/log_cause.h"

struct io_gate {
	struct io_gate_set *set;
	char id[64];
	int refs;               /* set->lock */
	int inflight;           /* set->lock */
	pthread_cond_t freed;   /* signalled when inflight drops */
	struct io_gate *next;   /* set->lock */
};

struct io_gate_set {
	pthread_mutex_t lock;
	struct io_gate *gates;  /* lock */
};

struct io_gate_set *io_gate_set_new(void)
{
	struct io_gate_set *s = calloc(1, sizeof(*s));

	if (s)
		pthread_mutex_init(&s->lock, NULL);
	return s;
}

void io_gate_set_free(struct io_gate_set *set)
{
	if (!set)
		return;
	/* Gates still referenced (a reader leaked at exit) are left alone. */
	pthread_mutex_destroy(&set->lock);
	free(set);
}

struct io_gate *io_gate_get(struct io_gate_set *set, const char *id)
{
	struct io_gate *g;
	pthread_condattr_t ca;

	pthread_mutex_lock(&set->lock);
	for (g = set->gates; g && strcmp(g->id, id); g = g->next)
		;
	if (!g && (g = calloc(1, sizeof(*g)))) {
		g->set = set;
		snprintf(g->id, sizeof(g->id), "%s", id);
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&g->freed, &ca);
		pthread_condattr_destroy(&ca);
		g->next = set->gates;
		set->gates = g;
	}
	if (g)
		g->refs++;
	pthread_mutex_unlock(&set->lock);
	return g;
}

void io_gate_put(struct io_gate *g)
{
	struct io_gate_set *set;
	struct io_gate **p;

	if (!g)
		return;
	set = g->set;
	pthread_mutex_lock(&set->lock);
	if (--g->refs == 0) {
		for (p = &set->gates; *p != g; p = &(*p)->next)
			;
		*p = g->next;
		pthread_cond_destroy(&g->freed);
		free(g);
	}
	pthread_mutex_unlock(&set->lock);
}

int io_gate_enter(struct io_gate *g, const char *name)
{
	struct io_gate_set *set = g->set;
	struct timespec until;
	char subject[128];
	int rc = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += IO_GATE_WAIT_MS / 1000;
	until.tv_nsec += (IO_GATE_WAIT_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&set->lock);
	while (g->inflight >= IO_GATE_LIMIT && rc == 0)
		rc = pthread_cond_timedwait(&g->freed, &set->lock, &until);
	if (g->inflight < IO_GATE_LIMIT) {
		g->inflight++;
		rc = 0;
	}
	pthread_mutex_unlock(&set->lock);
	if (rc == 0)
		return 0;
	snprintf(subject, sizeof(subject), "gate:%s", g->id);
	if (log_cause_new(subject, "hung"))
		vlog(LOG_ERR, "%s: %d reads have not come back for %d s: further reads of this layer "
		     "fail with EIO until one does", name, IO_GATE_LIMIT, IO_GATE_WAIT_MS / 1000);
	return -EIO;
}

void io_gate_leave(struct io_gate *g)
{
	struct io_gate_set *set = g->set;
	char subject[128];

	pthread_mutex_lock(&set->lock);
	g->inflight--;
	pthread_cond_signal(&g->freed);
	pthread_mutex_unlock(&set->lock);
	snprintf(subject, sizeof(subject), "gate:%s", g->id);
	log_cause_clear(subject);
}
