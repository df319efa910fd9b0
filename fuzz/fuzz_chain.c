/*
 * fuzz_chain: libFuzzer target for the qcow2 read engine. The input is a
 * stack of up to four in-memory layers; layer 0 is the top and a backing
 * string "L<n>" names layer n (anything else is missing). Every layer is
 * opened, probed, mapped and read over ranges the input chooses, so headers,
 * L1/L2 tables, extended-L2 bitmaps, compressed descriptors and backing
 * strings are all attacker-controlled.
 *
 * Input: byte 0 = layer count - 1 (mod 4), byte 1 = top format (0 auto,
 * 1 qcow2, 2 raw), then per layer a 4-byte little-endian length and the
 * bytes; the remaining tail seeds the read offsets.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "chain/chain.h"
#include "chain/diff.h"
#include "common/log.h"

#define MAX_LAYERS 4
#define READ_MAX (256 * 1024)

struct mem_layer {
	struct layer_io io;
	const uint8_t *data;
	char name[8];
};

static int mem_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	struct mem_layer *m = (struct mem_layer *)io;

	if (off > io->size || len > io->size - off)
		return -EIO;
	memcpy(buf, m->data + off, len);
	return 0;
}

static void mem_close(struct layer_io *io)
{
	free(io);
}

static const struct layer_io_ops mem_ops = { .pread = mem_pread, .close = mem_close };

struct input {
	int n;
	const uint8_t *data[MAX_LAYERS];
	size_t len[MAX_LAYERS];
};

static struct layer_io *mem_open(const struct input *in, int i)
{
	struct mem_layer *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	snprintf(m->name, sizeof(m->name), "L%d", i);
	m->io.ops = &mem_ops;
	m->io.size = in->len[i];
	m->io.name = m->name;
	m->io.id = m->name;
	m->data = in->data[i];
	return &m->io;
}

static int open_backing(const struct chain_store *st, struct layer_io *from, const char *backing,
			struct layer_io **out)
{
	const struct input *in = st->opaque;

	(void)from;
	if (backing[0] != 'L' || backing[1] < '0' || backing[1] >= '0' + in->n || backing[2])
		return strchr(backing, '/') ? -EACCES : -ENOENT;
	*out = mem_open(in, backing[1] - '0');
	return *out ? 0 : -ENOMEM;
}

static uint64_t next_u64(const uint8_t **p, size_t *left)
{
	uint64_t v = 0;

	for (int i = 0; i < 8 && *left; i++, (*p)++, (*left)--)
		v = v << 8 | **p;
	return v;
}

static int stop_after_64(void *arg, uint64_t off, uint64_t len, bool exists)
{
	(void)off, (void)len, (void)exists;
	return ++*(int *)arg >= 64;
}

/* chain/diff.c over the same layers: allocated, and changed against the view of the next layer down. */
static void fuzz_diff(struct chain *c, struct input *in, const struct chain_store *st,
		      enum chain_layer_format fmt)
{
	struct chain *older;
	int n = 0;

	chain_allocated(c, stop_after_64, &n);
	if (chain_open(mem_open(in, in->n > 1 ? 1 : 0), fmt, st, "fuzz-older", &older))
		return;
	n = 0;
	chain_changed(c, older, stop_after_64, &n);
	n = 0;
	chain_changed_compare(older, c, stop_after_64, &n);
	chain_put(older);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[READ_MAX];
	struct input in = { 0 };
	struct chain_store st = { .open_backing = open_backing, .opaque = &in };
	struct chain_probe probe;
	struct chain *c;
	const uint8_t *p = data + 2;
	size_t left;
	enum chain_layer_format fmt;

	vlog_silence(true);
	if (size < 2)
		return 0;
	in.n = 1 + data[0] % MAX_LAYERS;
	fmt = data[1] % 3 == 1 ? CHAIN_FMT_QCOW2 : data[1] % 3 == 2 ? CHAIN_FMT_RAW : CHAIN_FMT_AUTO;
	left = size - 2;
	for (int i = 0; i < in.n; i++) {
		uint32_t n = 0;

		for (int b = 0; b < 4 && left; b++, p++, left--)
			n |= (uint32_t)*p << (8 * b);
		if (n > left)
			n = left;
		in.data[i] = p;
		in.len[i] = n;
		p += n;
		left -= n;
	}
	for (int i = 0; i < in.n; i++) {
		struct layer_io *io = mem_open(&in, i);

		if (io && chain_probe_layer(io, &probe) == 0)
			chain_probe_release(&probe);
		layer_close(io);
	}
	if (chain_open(mem_open(&in, 0), fmt, &st, "fuzz", &c))
		return 0;
	uint64_t vsize = chain_size(c);

	for (int r = 0; r < 8 && vsize; r++) {
		uint64_t off = next_u64(&p, &left) % vsize, len = next_u64(&p, &left) % READ_MAX + 1;
		struct chain_extent e;

		chain_read(c, buf, len, off);
		for (int k = 0; k < 16 && off < vsize; k++) {
			if (chain_map(c, off, vsize - off, &e))
				break;
			off += e.len;
		}
	}
	fuzz_diff(c, &in, &st, fmt);
	chain_put(c);
	return 0;
}
