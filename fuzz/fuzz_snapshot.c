/*
 * fuzz_snapshot: libFuzzer target for qcow2 internal snapshots
 * (chain/qcow2_snapshot.h) on one hostile in-memory image.
 *
 * Input: byte 0 picks the operations (bit 0 create, bit 1 delete of the
 * first snapshot, bit 2 reclaim, bit 3 a second create), byte 1 how far
 * the image may grow (in 4 KiB units), the rest is the image. Every input
 * is listed, checked and read at each snapshot first.
 *
 * Properties (abort() when broken, so libFuzzer reports them):
 *  - an image the checker finds structural errors in is never written;
 *  - after a successful create/delete/reclaim the image has no structural
 *    errors and no COPIED errors; reclaim leaves no leaks either;
 *  - a failed operation on an image without errors leaves none.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "chain/chain.h"
#include "chain/qcow2_snapshot.h"
#include "common/log.h"

#define MAX_IMAGE (1u << 20)

struct mem {
	struct layer_io io;
	uint8_t *data;
	size_t cap;
	bool wrote;
};

static int m_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	struct mem *m = (struct mem *)io;

	if (off > io->size || len > io->size - off)
		return -EIO;
	memcpy(buf, m->data + off, len);
	return 0;
}

static int m_pwrite(struct layer_io *io, const void *buf, size_t len, uint64_t off)
{
	struct mem *m = (struct mem *)io;

	if (off > m->cap || len > m->cap - off)
		return -ENOSPC;
	memcpy(m->data + off, buf, len);
	if (off + len > io->size)
		io->size = off + len;
	m->wrote = true;
	return 0;
}

static int m_flush(struct layer_io *io)
{
	(void)io;
	return 0;
}

static void m_close(struct layer_io *io)
{
	(void)io;
}

static const struct layer_io_ops mem_ops = { .pread = m_pread, .pwrite = m_pwrite, .flush = m_flush,
					     .close = m_close };

/* A read-only view of the same bytes, owned by the chain it is handed to. */
struct view_io {
	struct layer_io io;
	struct mem *m;
};

static int v_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	return m_pread(&((struct view_io *)io)->m->io, buf, len, off);
}

static void v_close(struct layer_io *io)
{
	free(io);
}

static const struct layer_io_ops view_ops = { .pread = v_pread, .close = v_close };

static int no_backing(const struct chain_store *st, struct layer_io *from, const char *b, struct layer_io **out)
{
	(void)st;
	(void)from;
	(void)b;
	*out = NULL;
	return -ENOENT;
}

static const struct chain_store store = { .open_backing = no_backing };

static void read_views(struct mem *m)
{
	static uint8_t buf[65536];
	struct qcow2_snapshot_list l;

	if (qcow2_snapshot_list(&m->io, &l))
		return;
	for (unsigned i = 0; i < l.n && i < 4; i++) {
		struct view_io *v = calloc(1, sizeof(*v));
		struct chain *c;

		if (!v)
			break;
		v->io = m->io;
		v->io.ops = &view_ops;
		v->m = m;
		if (chain_open_snapshot(&v->io, CHAIN_FMT_QCOW2, &store, l.s[i].name, "fuzz", &c))
			continue;
		uint64_t size = chain_size(c), off = 0;

		for (int k = 0; k < 8 && off < size; k++) {
			struct chain_extent e;

			if (chain_map(c, off, size - off, &e))
				break;
			chain_read(c, buf, e.len < sizeof(buf) ? e.len : sizeof(buf), off);
			off += e.len;
		}
		chain_put(c);
	}
	qcow2_snapshot_list_free(&l);
}

static void op(struct mem *m, int which)
{
	struct qcow2_check_result before, after;
	struct qcow2_snapshot_list l;
	char name[64] = "fz";
	int rc, crc = qcow2_check(&m->io, &before);
	bool clean_before = crc == 0 && before.errors == 0;

	m->wrote = false;
	if (which == 1) {
		if (qcow2_snapshot_list(&m->io, &l))
			return;
		if (l.n)
			snprintf(name, sizeof(name), "%s", l.s[0].name);
		qcow2_snapshot_list_free(&l);
		if (!name[0])
			return;
		rc = qcow2_snapshot_delete(&m->io, name, QCOW2_SNAP_GROW);
	} else if (which == 2) {
		rc = qcow2_reclaim(&m->io, QCOW2_SNAP_GROW, NULL);
	} else {
		rc = qcow2_snapshot_create(&m->io, name, QCOW2_SNAP_GROW);
	}
	if (!clean_before) {
		if (m->wrote)
			abort();   /* wrote into an image with errors */
		return;
	}
	if (qcow2_check(&m->io, &after))
		abort();
	if (after.errors)
		abort();
	if (rc == 0 && after.copied_errors)
		abort();
	if (rc == 0 && which == 2 && after.leaks)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mem m = { 0 };
	struct qcow2_check_result r;

	vlog_silence(true);
	if (size < 2 || size - 2 > MAX_IMAGE)
		return 0;
	m.cap = size - 2 + (size_t)data[1] * 4096 + 65536 * 4;
	m.data = calloc(1, m.cap);
	if (!m.data)
		return 0;
	memcpy(m.data, data + 2, size - 2);
	m.io.ops = &mem_ops;
	m.io.size = size - 2;
	m.io.name = "fuzz";
	m.io.id = "fuzz";
	read_views(&m);
	qcow2_check(&m.io, &r);
	if (data[0] & 1)
		op(&m, 0);
	if (data[0] & 2)
		op(&m, 1);
	if (data[0] & 4)
		op(&m, 2);
	if (data[0] & 8)
		op(&m, 0);
	read_views(&m);
	free(m.data);
	return 0;
}
