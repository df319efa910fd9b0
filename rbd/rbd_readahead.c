/*
 * rbd_readahead: whole objects read ahead of a sequential reader of a
 * snapshot view.
 *
 * A snapshot never changes, so bytes read ahead of the reader cannot go
 * stale; current is never read ahead (it must read what the VM wrote just
 * before the read). Through the page cache the kernel asks for 128 KiB to
 * 1 MiB at a time, each a round trip to an OSD: 242 MiB/s for a buffered
 * dd of a snapshot view where `rbd export` of the same image, whole objects
 * with several in flight, gave 2148 MiB/s (bench part rbd, 2026-12-04).
 *
 * Once reads of at least RA_MIN_READ have followed each other RA_TRIGGER
 * times, each read starts whole-object reads (rbd_aio_read into a slot's
 * buffer) of the objects after its own, and a read that falls in a slot
 * waits for it and copies from it. How many objects ahead grows with the
 * stream, one more per object it has read, up to RA_AHEAD: a reader that
 * reads a few hundred KiB in a row (a small file of a filesystem in the
 * image) costs the cluster one object, not RA_AHEAD. A slot is free
 * again once every byte of its object has been copied out, or, behind the
 * stream, when a new object needs it. A read that does not follow the
 * stream (a random read, another reader's stream) ends it, and the buffers
 * of an ended stream are unmapped, as they are when the stream reaches the
 * end of the image: an open view holds at most RA_SLOTS objects' bytes,
 * and only while something streams it.
 *
 * A slot whose read failed serves nothing: the reader reads that range
 * itself and reports the error as any read does.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/check.h"
#include "rbd/rbd.h"

#define RA_AHEAD 4
#define RA_SLOTS (RA_AHEAD + 2)     /* the objects ahead, the one being read, one behind */
#define RA_MIN_READ (64u << 10)     /* smaller reads are random ones, never a stream */
#define RA_TRIGGER 2

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READY, SLOT_FAILED };

struct ra_slot {
	struct rbd_readahead *ra;
	enum slot_state state;
	uint64_t obj;
	size_t len;       /* bytes of the object inside the image */
	size_t served;    /* of them copied out */
	int users;        /* threads waiting on or copying from it */
	char *buf;        /* mmap'd, piece bytes; kept while the stream lasts */
};

struct rbd_readahead {
	rbd_image_t img;
	uint64_t piece, size;
	pthread_mutex_t lock;
	pthread_cond_t done;
	uint64_t stream_start;  /* where the stream began */
	uint64_t stream_end;    /* where the last read of the stream ended */
	int stream_reads;       /* reads in a row that followed each other */
	int reading;            /* slots in SLOT_READING */
	struct ra_slot slot[RA_SLOTS];
};

struct rbd_readahead *rbd_readahead_new(rbd_image_t img, uint64_t piece, uint64_t size)
{
	struct rbd_readahead *ra = calloc(1, sizeof(*ra));

	if (!ra)
		return NULL;
	ra->img = img;
	ra->piece = piece;
	ra->size = size;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->done, NULL);
	for (int i = 0; i < RA_SLOTS; i++)
		ra->slot[i].ra = ra;
	return ra;
}

/* A slot nobody needs any more (lock held): free, its buffer unmapped. */
static void unmap_slot(struct rbd_readahead *ra, struct ra_slot *s)
{
	s->state = SLOT_FREE;
	if (s->buf) {
		munmap(s->buf, ra->piece);
		s->buf = NULL;
	}
}

static void slot_done(rbd_completion_t c, void *arg)
{
	struct ra_slot *s = arg;
	struct rbd_readahead *ra = s->ra;
	ssize_t ret = rbd_aio_get_return_value(c);

	rbd_aio_release(c);
	if (ret >= 0 && (size_t)ret < s->len)
		memset(s->buf + ret, 0, s->len - ret); /* past the end of a shorter parent */
	pthread_mutex_lock(&ra->lock);
	VSTORFS_CHECK(s->state == SLOT_READING);
	s->state = ret < 0 ? SLOT_FAILED : SLOT_READY;
	ra->reading--;
	if (ra->stream_reads == 0 && s->users == 0)
		unmap_slot(ra, s); /* the stream ended meanwhile */
	pthread_cond_broadcast(&ra->done);
	pthread_mutex_unlock(&ra->lock);
}

/* Unmap the buffers of free slots (lock held): the stream ended. */
static void drop_buffers(struct rbd_readahead *ra)
{
	for (int i = 0; i < RA_SLOTS; i++) {
		struct ra_slot *s = &ra->slot[i];

		if (s->users == 0 && s->state != SLOT_READING)
			unmap_slot(ra, s);
	}
}

static struct ra_slot *find(struct rbd_readahead *ra, uint64_t obj)
{
	for (int i = 0; i < RA_SLOTS; i++)
		if (ra->slot[i].state != SLOT_FREE && ra->slot[i].obj == obj)
			return &ra->slot[i];
	return NULL;
}

/* A slot for an object after `cur` (lock held): a free one, else one
 * behind the stream that nobody uses; NULL when all are still needed. */
static struct ra_slot *take(struct rbd_readahead *ra, uint64_t cur)
{
	struct ra_slot *behind = NULL;

	for (int i = 0; i < RA_SLOTS; i++) {
		struct ra_slot *s = &ra->slot[i];

		if (s->state == SLOT_FREE)
			return s;
		if (s->users == 0 && s->state != SLOT_READING && s->obj < cur && (!behind || s->obj < behind->obj))
			behind = s;
	}
	return behind;
}

/* Claim slot s for object obj (lock held): READING from now on, so no
 * one else takes it; the read itself is issued by issue(), unlocked. */
static bool claim(struct rbd_readahead *ra, struct ra_slot *s, uint64_t obj)
{
	uint64_t off = obj * ra->piece;

	if (!s->buf) {
		void *p = mmap(NULL, ra->piece, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return false;
		s->buf = p;
	}
	s->obj = obj;
	s->len = ra->size - off < ra->piece ? ra->size - off : ra->piece;
	s->served = 0;
	s->users = 0;
	s->state = SLOT_READING;
	ra->reading++;
	return true;
}

/* Without the lock: librbd may complete a read (an object the object map
 * calls absent) in the calling thread, and slot_done takes the lock. */
static void issue(struct rbd_readahead *ra, struct ra_slot *s)
{
	rbd_completion_t c;
	int e = rbd_aio_create_completion(s, slot_done, &c);

	if (e == 0 && (e = rbd_aio_read(ra->img, s->obj * ra->piece, s->len, s->buf, c)) < 0)
		rbd_aio_release(c);
	if (e < 0) {
		pthread_mutex_lock(&ra->lock);
		s->state = SLOT_FAILED; /* a waiter reads the range itself */
		ra->reading--;
		pthread_cond_broadcast(&ra->done);
		pthread_mutex_unlock(&ra->lock);
	}
}

void rbd_readahead_note(struct rbd_readahead *ra, uint64_t off, size_t len)
{
	uint64_t obj = off / ra->piece, ahead;
	struct ra_slot *claimed[RA_AHEAD];
	int n = 0;
	bool follows;

	pthread_mutex_lock(&ra->lock);
	/* the kernel's readahead requests run on several threads: "follows"
	 * allows one object of disorder either way */
	follows = len >= RA_MIN_READ && off + ra->piece >= ra->stream_end && off <= ra->stream_end + ra->piece;
	if (!follows) {
		if (ra->stream_reads)
			drop_buffers(ra);
		ra->stream_reads = 0;
		ra->stream_start = off;
		ra->stream_end = off + len;
	} else {
		ra->stream_reads++;
		if (off + len > ra->stream_end)
			ra->stream_end = off + len;
	}
	ahead = ra->stream_end > ra->stream_start ? 1 + (ra->stream_end - ra->stream_start) / ra->piece : 1;
	if (ahead > RA_AHEAD)
		ahead = RA_AHEAD;
	if (ra->stream_reads >= RA_TRIGGER) {
		for (uint64_t o = obj + 1; o <= obj + ahead && o * ra->piece < ra->size; o++) {
			struct ra_slot *s;

			if (find(ra, o))
				continue;
			if (!(s = take(ra, obj)) || !claim(ra, s, o))
				break;
			claimed[n++] = s;
		}
	}
	pthread_mutex_unlock(&ra->lock);
	for (int i = 0; i < n; i++)
		issue(ra, claimed[i]);
}

int rbd_readahead_copy(struct rbd_readahead *ra, void *dst, uint64_t off, size_t len)
{
	uint64_t obj = off / ra->piece, at = off % ra->piece;
	struct ra_slot *s;
	int served = 0;
	bool ended = false;

	VSTORFS_CHECK(at + len <= ra->piece);
	pthread_mutex_lock(&ra->lock);
	s = find(ra, obj);
	if (!s) {
		pthread_mutex_unlock(&ra->lock);
		return 0;
	}
	s->users++;
	while (s->state == SLOT_READING)
		pthread_cond_wait(&ra->done, &ra->lock);
	if (s->state == SLOT_READY && at + len <= s->len) {
		pthread_mutex_unlock(&ra->lock);
		memcpy(dst, s->buf + at, len);
		pthread_mutex_lock(&ra->lock);
		s->served += len;
		served = 1;
	}
	if (--s->users == 0 && (s->state == SLOT_FAILED || s->served >= s->len)) {
		s->state = SLOT_FREE;
		ended = obj * ra->piece + s->len >= ra->size;
		/* the stream reached the end of the image, or ended meanwhile */
		if (ended || ra->stream_reads == 0)
			drop_buffers(ra);
	}
	pthread_mutex_unlock(&ra->lock);
	/* librbd read each object into buffers of its own, freed into the
	 * arenas of its threads, where glibc keeps them (fs/main.c raises the
	 * trim and mmap thresholds): 35 MiB more RSS after a bench run. Give
	 * them back once a stream is over. */
	if (ended)
		malloc_trim(0);
	return served;
}

void rbd_readahead_free(struct rbd_readahead *ra)
{
	if (!ra)
		return;
	pthread_mutex_lock(&ra->lock);
	while (ra->reading)
		pthread_cond_wait(&ra->done, &ra->lock);
	drop_buffers(ra);
	pthread_mutex_unlock(&ra->lock);
	pthread_cond_destroy(&ra->done);
	pthread_mutex_destroy(&ra->lock);
	free(ra);
}
