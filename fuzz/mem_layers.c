/*
 * mem_layers: see mem_layers.h.
 */
#include "mem_layers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mem_layer {
	struct layer_io io;
	struct mem_stack *st;
	int layer;
	char name[16], id[16];
};

static int mem_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	struct mem_layer *m = (struct mem_layer *)io;

	if (off > io->size || len > io->size - off)
		return -EIO;
	memcpy(buf, m->st->data[m->layer] + off, len);
	return 0;
}

static int mem_pwrite(struct layer_io *io, const void *buf, size_t len, uint64_t off)
{
	struct mem_layer *m = (struct mem_layer *)io;

	if (off > io->size || len > io->size - off)
		return -ENOSPC;
	memcpy(m->st->data[m->layer] + off, buf, len);
	m->st->writes++;
	return 0;
}

static int mem_flush(struct layer_io *io)
{
	(void)io;
	return 0;
}

static void mem_close(struct layer_io *io)
{
	free(io);
}

static const struct layer_io_ops ro_ops = { .pread = mem_pread, .close = mem_close };
static const struct layer_io_ops rw_ops = {
	.pread = mem_pread, .close = mem_close, .pwrite = mem_pwrite, .flush = mem_flush,
};

struct layer_io *mem_layer_open(struct mem_stack *st, int name, int writable)
{
	struct mem_layer *m;

	if (name < 0 || name >= st->n || st->by_name[name] < 0 || !(m = calloc(1, sizeof(*m))))
		return NULL;
	m->st = st;
	m->layer = st->by_name[name];
	snprintf(m->name, sizeof(m->name), "L%d", name);
	/* Identity follows the bytes, as an LV UUID survives a rename. */
	snprintf(m->id, sizeof(m->id), "B%d", m->layer);
	m->io.ops = writable ? &rw_ops : &ro_ops;
	m->io.size = st->len[m->layer];
	m->io.name = m->name;
	m->io.id = m->id;
	return &m->io;
}

static int open_backing(const struct chain_store *cs, struct layer_io *from, const char *backing,
			struct layer_io **out)
{
	struct mem_stack *st = cs->opaque;

	(void)from;
	if (backing[0] != 'L' || backing[1] < '0' || backing[1] >= '0' + st->n || backing[2] ||
	    st->by_name[backing[1] - '0'] < 0)
		return strchr(backing, '/') ? -EACCES : -ENOENT;
	*out = mem_layer_open(st, backing[1] - '0', 0);
	return *out ? 0 : -ENOMEM;
}

int mem_stack_init(struct mem_stack *st, int n, const uint8_t *p, size_t left,
		   const size_t *extra, const uint8_t **tail, size_t *tail_left)
{
	memset(st, 0, sizeof(*st));
	st->n = n;
	st->store.open_backing = open_backing;
	st->store.opaque = st;
	for (int i = 0; i < n; i++) {
		uint32_t len = 0;
		size_t more = extra ? extra[i] : 0;

		for (int b = 0; b < 4 && left; b++, p++, left--)
			len |= (uint32_t)*p << (8 * b);
		if (len > left)
			len = left;
		st->by_name[i] = i;
		st->len[i] = len + more;
		if (!(st->data[i] = calloc(1, st->len[i] + 1)))
			return -ENOMEM;
		memcpy(st->data[i], p, len);
		p += len;
		left -= len;
	}
	*tail = p;
	*tail_left = left;
	return 0;
}

void mem_stack_free(struct mem_stack *st)
{
	for (int i = 0; i < st->n; i++)
		free(st->data[i]);
	memset(st, 0, sizeof(*st));
}
