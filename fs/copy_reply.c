#include "copy_reply.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/big_buffer.h"

#define PAGE 4096u

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int pipe_max;
static pthread_key_t buf_key;

struct thread_buf {
	void *p;
	size_t cap;
};

static void thread_buf_free(void *v)
{
	struct thread_buf *b = v;

	big_buffer_free(b->p, b->cap);
	free(b);
}

/* Once per process: the key of the threads' buffers, and the largest pipe
 * this process may make (what libfuse's splice is bounded by). */
static void init_once(void)
{
	int p[2], got = -1;

	(void)pthread_key_create(&buf_key, thread_buf_free);
	if (pipe(p))
		return;
	for (int size = 16 << 20; size >= (int)(64 * PAGE) && got < 0; size /= 2)
		got = fcntl(p[0], F_SETPIPE_SZ, size);
	close(p[0]);
	close(p[1]);
	pipe_max = got;
}

size_t copy_reply_splice_max(unsigned nbufs)
{
	/* libfuse wants room for the reply, a page per buffer, one for the
	 * header and one spare. */
	size_t overhead = (size_t)(nbufs + 2) * PAGE;

	pthread_once(&once, init_once);
	return pipe_max > 0 && (size_t)pipe_max > overhead ? (size_t)pipe_max - overhead : 0;
}

/* This thread's buffer of at least len bytes, kept until the thread ends:
 * a fresh one per reply would fault in every page again. */
static void *thread_buffer(size_t len)
{
	struct thread_buf *b;

	pthread_once(&once, init_once);
	b = pthread_getspecific(buf_key);
	if (b && b->cap >= len)
		return b->p;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b || pthread_setspecific(buf_key, b)) {
			free(b);
			return NULL;
		}
	}
	big_buffer_free(b->p, b->cap);
	b->cap = (len + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
	b->p = big_buffer_alloc(b->cap);
	if (!b->p)
		b->cap = 0;
	return b->p;
}

int copy_reply(fuse_req_t req, struct view_reader *vr, uint64_t off, size_t len)
{
	void *buf = thread_buffer(len);
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	n = vr->ops->read(vr, buf, len, off);
	if (n < 0)
		return (int)n;
	if ((size_t)n != len)
		return -EIO;
	fuse_reply_buf(req, buf, len);
	return 0;
}
