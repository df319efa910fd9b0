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

#include "chain/chain.h"
#include "chain/diff.h"
#include "common/log.h"
#include "mem_layers.h"

#define READ_MAX (256 * 1024)

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
static void fuzz_diff(struct chain *c, struct mem_stack *st, enum chain_layer_format fmt)
{
	struct chain *older;
	int n = 0;

	chain_allocated(c, stop_after_64, &n);
	if (chain_open(mem_layer_open(st, st->n > 1 ? 1 : 0, 0), fmt, &st->store, "fuzz-older", &older))
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
	struct mem_stack st;
	struct chain_probe probe;
	struct chain *c;
	const uint8_t *p;
	size_t left;
	enum chain_layer_format fmt;

	vlog_silence(true);
	if (size < 2)
		return 0;
	fmt = data[1] % 3 == 1 ? CHAIN_FMT_QCOW2 : data[1] % 3 == 2 ? CHAIN_FMT_RAW : CHAIN_FMT_AUTO;
	if (mem_stack_init(&st, 1 + data[0] % MEM_MAX_LAYERS, data + 2, size - 2, NULL, &p, &left))
		goto out;
	for (int i = 0; i < st.n; i++) {
		struct layer_io *io = mem_layer_open(&st, i, 0);

		if (io && chain_probe_layer(io, &probe) == 0)
			chain_probe_release(&probe);
		layer_close(io);
	}
	if (chain_open(mem_layer_open(&st, 0, 0), fmt, &st.store, "fuzz", &c))
		goto out;
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
	fuzz_diff(c, &st, fmt);
	chain_put(c);
out:
	mem_stack_free(&st);
	return 0;
}
