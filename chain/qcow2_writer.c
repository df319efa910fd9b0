/*
 * qcow2_writer: see qcow2_writer.h for the contract and write ordering.
 *
 * State kept per writer: the header fields it needs, the L1 table and the
 * refcount table in memory (both bounded by the header checks), a small
 * cache of L2 tables and refcount blocks, and the queue of clusters to
 * write in the next commit. The on-disk L1/L2/refcount layouts are the
 * qcow2 spec's (docs/interop/qcow2.txt); compressed clusters are never
 * written, only replaced.
 */
#include "qcow2_writer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/big_buffer.h"
#include "common/check.h"
#include "common/log.h"
#include "qcow2_check.h"
#include "qcow2_format.h"

#define OFLAG_COPIED     (1ULL << 63)
#define MAX_TABLE_BYTES  (32ULL << 20)
#define L2_CACHE_SIZE    8
#define MAX_PENDING      512
/* The batch's cluster buffers, together: bounds memory at 2 MiB clusters. */
#define PENDING_BYTES    (64ULL << 20)

struct cached_table {
	uint64_t off;        /* host offset; 0 = empty slot */
	uint8_t *buf;        /* one cluster */
	bool dirty;          /* refblocks: modified since written */
};

struct pending {
	uint64_t cluster;    /* guest cluster index */
	uint32_t mask;       /* units queued (bit per subcluster; bit 0 for whole clusters) */
	uint8_t *data;       /* cluster-sized */
	/* plan, filled by commit */
	uint64_t host;       /* where the data goes */
	bool full;           /* write the whole cluster (materialised) */
	uint64_t new_entry, new_bitmap;
	uint64_t old_compressed; /* entry of a compressed cluster being replaced, else 0 */
	uint64_t new_l2;     /* L2 table allocated for this cluster's L1 slot, else 0 */
};

struct qcow2_writer {
	struct layer_io *io;
	qcow2_fill_fn fill;
	void *fill_opaque;
	unsigned cluster_bits;
	uint64_t cs, vsize, unit;
	bool extended;
	unsigned version, refcount_order;
	uint64_t l2_entries, l2e_size;
	uint32_t l1_size;
	uint64_t l1_off, *l1;
	uint64_t reftable_off, reftable_entries, *reftable;
	uint64_t refs_per_block;
	uint64_t next_free;  /* first cluster index past the image's end */
	struct cached_table l2c[L2_CACHE_SIZE];
	unsigned l2c_next;
	struct cached_table rbc[L2_CACHE_SIZE]; /* refcount blocks */
	unsigned rbc_next;
	struct pending pend[MAX_PENDING];
	int npend, max_pending;
	/* pend[i].data is pool[i]: cluster buffers made once and kept for the
	 * writer's life. Fresh ones for every batch cost a page fault per 4 KiB
	 * each time (glibc hands big blocks back to the kernel on free), which
	 * made merges several times slower than qemu-img commit. */
	uint8_t *pool;       /* max_pending clusters, one block: neighbours are adjacent */
	uint8_t *spare;      /* what materialise() fills */
	int failed;          /* a commit failed: its in-memory plan is not the image's */
	bool unflushed;      /* written since the last flush */
	bool reftable_dirty; /* a refcount block was added since the table was written */
	uint64_t hdr_backing_off, hdr_ext_end;
	uint32_t hdr_backing_len;
};

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (56 - 8 * i);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (24 - 8 * i);
}

static int fail(struct qcow2_writer *w, int err, const char *why)
{
	vlog(LOG_ERR, "%s: cannot write this image: %s", w->io->name, why);
	return err;
}

/*
 * Every write goes through wwrite and every ordering point through wflush,
 * which skips the flush when nothing was written since the last one: on a
 * block device a flush costs the backing store a cache flush (tens of ms on
 * a loop device), and a batch often has nothing to say at some points.
 */
static int wwrite(struct qcow2_writer *w, const void *buf, size_t len, uint64_t off)
{
	w->unflushed = true;
	return layer_pwrite(w->io, buf, len, off);
}

static int wflush(struct qcow2_writer *w)
{
	int rc;

	if (!w->unflushed)
		return 0;
	rc = layer_flush(w->io);
	if (rc == 0)
		w->unflushed = false;
	return rc;
}

/* ---- refcounts ---- */

static struct cached_table *cache_get(struct qcow2_writer *w, struct cached_table *c,
				      unsigned *next, uint64_t off, bool load, int *rc)
{
	struct cached_table *slot;

	for (int i = 0; i < L2_CACHE_SIZE; i++)
		if (c[i].off == off)
			return &c[i];
	/* Evict round-robin, never a dirty table (refblocks are written per commit). */
	for (int tries = 0;; tries++) {
		slot = &c[(*next)++ % L2_CACHE_SIZE];
		if (!slot->dirty)
			break;
		if (tries > L2_CACHE_SIZE) {
			*rc = -ENOSPC;
			return NULL;
		}
	}
	if (!slot->buf && !(slot->buf = malloc(w->cs))) {
		*rc = -ENOMEM;
		return NULL;
	}
	slot->off = 0;
	if (load) {
		*rc = layer_pread(w->io, slot->buf, w->cs, off);
		if (*rc < 0)
			return NULL;
	} else {
		memset(slot->buf, 0, w->cs);
	}
	slot->off = off;
	return slot;
}

static int refcount_scan_end(struct qcow2_writer *w)
{
	w->next_free = 0;
	for (uint64_t b = 0; b < w->reftable_entries; b++) {
		uint64_t off = w->reftable[b] & QCOW2_OFFSET_MASK;
		struct cached_table *t;
		int rc = 0;

		if (!off)
			continue;
		if (off % w->cs || off + w->cs > w->io->size)
			return fail(w, -EIO, "refcount block outside the image");
		t = cache_get(w, w->rbc, &w->rbc_next, off, true, &rc);
		if (!t)
			return rc;
		for (uint64_t i = 0; i < w->refs_per_block; i++)
			if (qcow2_refcount_entry_get(t->buf, i, w->refcount_order))
				w->next_free = b * w->refs_per_block + i + 1;
	}
	return 0;
}

static int refcount_set(struct qcow2_writer *w, uint64_t cluster, uint64_t value);

/* Make sure refcount block `b` exists (allocating it at the image end). */
static int refblock_for(struct qcow2_writer *w, uint64_t b, struct cached_table **out)
{
	int rc = 0;

	if (b >= w->reftable_entries)
		return fail(w, -ENOSPC, "the refcount table would have to grow");
	if (!(w->reftable[b] & QCOW2_OFFSET_MASK)) {
		uint64_t n = w->next_free++;
		struct cached_table *t;

		if ((n + 1) * w->cs > w->io->size)
			return -ENOSPC;
		t = cache_get(w, w->rbc, &w->rbc_next, n * w->cs, false, &rc);
		if (!t)
			return rc;
		t->dirty = true;
		w->reftable[b] = n * w->cs;
		w->reftable_dirty = true;
		/* Written with the other refcount blocks; the table entry after them. */
		rc = refcount_set(w, n, 1);
		if (rc)
			return rc;
	}
	*out = cache_get(w, w->rbc, &w->rbc_next, w->reftable[b] & QCOW2_OFFSET_MASK, true, &rc);
	return *out ? 0 : rc;
}

static int refcount_set(struct qcow2_writer *w, uint64_t cluster, uint64_t value)
{
	struct cached_table *t;
	int rc = refblock_for(w, cluster / w->refs_per_block, &t);

	if (rc)
		return rc;
	qcow2_refcount_entry_set(t->buf, cluster % w->refs_per_block, w->refcount_order, value);
	t->dirty = true;
	return 0;
}

static int refcount_add(struct qcow2_writer *w, uint64_t cluster, int delta)
{
	struct cached_table *t;
	uint64_t v;
	int rc = refblock_for(w, cluster / w->refs_per_block, &t);

	if (rc)
		return rc;
	v = qcow2_refcount_entry_get(t->buf, cluster % w->refs_per_block, w->refcount_order);
	if ((delta < 0 && v == 0) || (delta > 0 && v + 1 >= (1ULL << (1u << w->refcount_order)) - 1))
		return fail(w, -EIO, "refcount out of range");
	return refcount_set(w, cluster, v + delta);
}

static int alloc_cluster(struct qcow2_writer *w, uint64_t *host)
{
	uint64_t n = w->next_free;
	int rc;

	if ((n + 1) * w->cs > w->io->size)
		return -ENOSPC;
	w->next_free++;
	rc = refcount_set(w, n, 1);
	*host = n * w->cs;
	return rc;
}

static int refblocks_write(struct qcow2_writer *w)
{
	int rc;

	for (int i = 0; i < L2_CACHE_SIZE; i++) {
		if (!w->rbc[i].dirty)
			continue;
		rc = wwrite(w, w->rbc[i].buf, w->cs, w->rbc[i].off);
		if (rc)
			return rc;
		w->rbc[i].dirty = false;
	}
	if (!w->reftable_dirty)
		return 0;
	if ((rc = wflush(w)))
		return rc;
	/* New refcount blocks become reachable only once written. */
	uint8_t *buf = malloc(w->reftable_entries * 8);

	if (!buf)
		return -ENOMEM;
	for (uint64_t i = 0; i < w->reftable_entries; i++)
		put64(buf + 8 * i, w->reftable[i]);
	rc = wwrite(w, buf, w->reftable_entries * 8, w->reftable_off);
	free(buf);
	if (rc == 0)
		w->reftable_dirty = false;
	return rc;
}

/* ---- open ---- */

static int parse_header(struct qcow2_writer *w, const uint8_t *buf, size_t len)
{
	struct qcow2_header h;
	const char *why = qcow2_decode_header(buf, len, &h);

	if (why)
		return fail(w, -EIO, why);
	if (h.nb_snapshots)
		return fail(w, -ENOTSUP, "it has internal snapshots");
	if (h.incompat & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT))
		return fail(w, -ENOTSUP, "it is marked dirty or corrupt (run qemu-img check -r first)");
	w->version = h.version;
	w->cluster_bits = h.cluster_bits;
	w->cs = 1ULL << w->cluster_bits;
	w->max_pending = PENDING_BYTES / w->cs < MAX_PENDING ? (int)(PENDING_BYTES / w->cs) : MAX_PENDING;
	w->hdr_backing_off = h.backing_offset;
	w->hdr_backing_len = h.backing_size;
	w->vsize = h.size;
	w->l1_size = h.l1_size;
	w->l1_off = h.l1_offset;
	w->reftable_off = h.refcount_table_offset;
	w->reftable_entries = (uint64_t)h.refcount_table_clusters * w->cs / 8;
	w->refcount_order = h.refcount_order;
	w->hdr_ext_end = h.header_length;
	w->extended = h.incompat & QCOW2_INCOMPAT_EXTL2;
	w->l2e_size = w->extended ? 16 : 8;
	w->l2_entries = w->cs / w->l2e_size;
	w->unit = w->extended ? w->cs / 32 : w->cs;
	w->refs_per_block = w->cs * 8 >> w->refcount_order;
	if ((uint64_t)w->l1_size * 8 > MAX_TABLE_BYTES || w->reftable_entries * 8 > MAX_TABLE_BYTES ||
	    w->l1_off % w->cs || w->reftable_off % w->cs ||
	    w->l1_off + (uint64_t)w->l1_size * 8 > w->io->size ||
	    w->reftable_off + w->reftable_entries * 8 > w->io->size ||
	    w->vsize > (uint64_t)w->l1_size * w->l2_entries * w->cs)
		return fail(w, -EIO, "tables out of bounds");
	return 0;
}

/* Where the header extensions end: free space for a new backing string starts here. */
static void find_ext_end(struct qcow2_writer *w, const uint8_t *h)
{
	uint64_t off = w->hdr_ext_end;

	while (off + 8 <= w->cs && off + 8 <= 65536) {
		uint32_t type = qcow2_be32(h + off), len = qcow2_be32(h + off + 4);

		off += 8;
		if (type == 0)
			break;
		off += (len + 7ULL) & ~7ULL;
	}
	w->hdr_ext_end = off;
}

int qcow2_writer_open(struct layer_io *io, qcow2_fill_fn fill, void *fill_opaque,
		      struct qcow2_writer **out)
{
	struct qcow2_writer *w = calloc(1, sizeof(*w));
	struct qcow2_layer_check ck;
	uint8_t *h = NULL, *tab = NULL;
	int rc = -ENOMEM;

	if (!w)
		return -ENOMEM;
	w->io = io;
	w->fill = fill;
	w->fill_opaque = fill_opaque;
	/*
	 * Only images qemu-img check finds consistent: the writer trusts the
	 * refcounts (a cluster it overwrites in place must be the entry's alone,
	 * a free one must be free), and what it writes must check clean again.
	 * Leaks are harmless and stay as they were.
	 */
	if ((rc = qcow2_check_layer(io, &ck)) < 0) {
		rc = fail(w, rc == -ENOTSUP ? -ENOTSUP : -EIO, "its tables cannot be checked");
		goto out;
	}
	if (ck.corruptions || ck.check_errors || ck.unreadable) {
		vlog(LOG_ERR, "%s: cannot write this image: qemu-img check would find %llu errors "
		     "and %llu check errors%s, the first: %s (run qemu-img check -r all first)", io->name,
		     (unsigned long long)ck.corruptions, (unsigned long long)ck.check_errors,
		     ck.unreadable ? ", and it holds entries vstorfs cannot read" : "", ck.first);
		rc = -EIO;
		goto out;
	}
	rc = -ENOMEM;
	if (!(h = malloc(65536)))
		goto out;
	rc = layer_pread(io, h, io->size < 65536 ? io->size : 65536, 0);
	if (rc || (rc = parse_header(w, h, io->size < 65536 ? io->size : 65536)))
		goto out;
	find_ext_end(w, h);
	rc = -ENOMEM;
	w->l1 = calloc(w->l1_size + 1, 8);
	w->reftable = calloc(w->reftable_entries + 1, 8);
	tab = malloc((w->l1_size > w->reftable_entries ? w->l1_size : w->reftable_entries) * 8 + 8);
	if (!w->l1 || !w->reftable || !tab)
		goto out;
	if ((rc = layer_pread(io, tab, (uint64_t)w->l1_size * 8, w->l1_off)))
		goto out;
	for (uint32_t i = 0; i < w->l1_size; i++)
		w->l1[i] = qcow2_be64(tab + 8 * i);
	if ((rc = layer_pread(io, tab, w->reftable_entries * 8, w->reftable_off)))
		goto out;
	for (uint64_t i = 0; i < w->reftable_entries; i++)
		w->reftable[i] = qcow2_be64(tab + 8 * i);
	rc = refcount_scan_end(w);
out:
	free(h);
	free(tab);
	if (rc) {
		qcow2_writer_close(w);
		return rc;
	}
	*out = w;
	return 0;
}

void qcow2_writer_close(struct qcow2_writer *w)
{
	if (!w)
		return;
	for (int i = 0; i < L2_CACHE_SIZE; i++) {
		free(w->l2c[i].buf);
		free(w->rbc[i].buf);
	}
	big_buffer_free(w->pool, (size_t)w->max_pending * w->cs);
	free(w->spare);
	free(w->l1);
	free(w->reftable);
	free(w);
}

uint64_t qcow2_writer_unit(const struct qcow2_writer *w)
{
	return w->unit;
}

uint64_t qcow2_writer_vsize(const struct qcow2_writer *w)
{
	return w->vsize;
}

uint64_t qcow2_writer_tail(const struct qcow2_writer *w)
{
	uint64_t end = w->next_free * w->cs;

	return end > w->io->size ? end - w->io->size : 0;
}

uint64_t qcow2_writer_room(const struct qcow2_writer *w)
{
	uint64_t end = w->next_free * w->cs;

	return end < w->io->size ? w->io->size - end : 0;
}

uint64_t qcow2_writer_table_room(const struct qcow2_writer *w)
{
	uint64_t end = w->next_free * w->cs, cap = w->reftable_entries * w->refs_per_block * w->cs;

	return end < cap ? cap - end : 0;
}

uint64_t qcow2_writer_cluster_size(const struct qcow2_writer *w)
{
	return w->cs;
}

/* ---- L2 entries ---- */

static int l2_entry(struct qcow2_writer *w, uint64_t cluster, uint64_t *entry, uint64_t *bitmap)
{
	uint64_t l1i = cluster / w->l2_entries, l2i = cluster % w->l2_entries, l2off;
	struct cached_table *t;
	int rc = 0;

	*entry = *bitmap = 0;
	if (l1i >= w->l1_size)
		return fail(w, -EIO, "cluster beyond the L1 table");
	l2off = w->l1[l1i] & QCOW2_OFFSET_MASK;
	if (!l2off)
		return 0;
	if (l2off % w->cs || l2off + w->cs > w->io->size)
		return fail(w, -EIO, "L2 table outside the image");
	t = cache_get(w, w->l2c, &w->l2c_next, l2off, true, &rc);
	if (!t)
		return rc;
	*entry = qcow2_be64(t->buf + l2i * w->l2e_size);
	if (w->extended)
		*bitmap = qcow2_be64(t->buf + l2i * w->l2e_size + 8);
	return 0;
}

/*
 * Can this cluster take data where it is? Any entry with a host cluster of
 * its own can: a data cluster, and also a zero-flagged one that still owns
 * its cluster (preallocation=metadata, or qemu's write -z over data). That
 * cluster is counted in the refcounts; allocating another one instead and
 * dropping the entry's offset leaked it. Compressed clusters share their
 * host clusters, so they are replaced (and freed) instead.
 */
static bool in_place(const struct qcow2_writer *w, uint64_t entry)
{
	if (entry & QCOW2_L2_COMPRESSED || !(entry & QCOW2_OFFSET_MASK))
		return false;
	return w->extended || w->version >= 3 || !(entry & QCOW2_L2_ZERO);
}

bool qcow2_writer_unit_preallocated(struct qcow2_writer *w, uint64_t off)
{
	uint64_t e, b;

	return l2_entry(w, off / w->cs, &e, &b) == 0 && in_place(w, e);
}

uint64_t qcow2_writer_in_place_host(struct qcow2_writer *w, uint64_t off)
{
	uint64_t e, b;

	if (l2_entry(w, off / w->cs, &e, &b) || !in_place(w, e))
		return 0;
	return e & QCOW2_OFFSET_MASK;
}

int qcow2_writer_need(struct qcow2_writer *w, uint64_t off, uint64_t len, uint64_t *bytes)
{
	uint64_t first = off / w->cs, last = (off + len - 1) / w->cs, l1_seen = UINT64_MAX;

	*bytes = 0;
	for (uint64_t c = first; c <= last && len; c++) {
		uint64_t e, b;
		int rc = l2_entry(w, c, &e, &b);

		if (rc)
			return rc;
		if (!in_place(w, e))
			*bytes += w->cs;
		if (!(w->l1[c / w->l2_entries] & QCOW2_OFFSET_MASK) && c / w->l2_entries != l1_seen) {
			l1_seen = c / w->l2_entries;
			*bytes += w->cs;
		}
	}
	return 0;
}

uint64_t qcow2_writer_refcount_need(const struct qcow2_writer *w, uint64_t bytes)
{
	/* Refcount blocks for the new clusters, generously (one more than they fill). */
	return bytes ? (bytes / w->cs / w->refs_per_block + 1) * w->cs : 0;
}

/* ---- queue and commit ---- */

int qcow2_writer_write(struct qcow2_writer *w, uint64_t off, const void *buf, uint64_t len)
{
	int rc;

	if (off % w->unit || len % w->unit || off >= w->vsize)
		return -EINVAL;
	while (len) {
		uint64_t c = off / w->cs, in = off % w->cs;
		uint64_t n = w->cs - in < len ? w->cs - in : len;
		struct pending *p = w->npend ? &w->pend[w->npend - 1] : NULL;

		if (!p || p->cluster != c) {
			if (w->npend == w->max_pending && (rc = qcow2_writer_commit(w)))
				return rc;
			p = &w->pend[w->npend];
			memset(p, 0, sizeof(*p));
			if (!w->pool && !(w->pool = big_buffer_alloc((size_t)w->max_pending * w->cs)))
				return -ENOMEM;
			p->data = w->pool + w->npend * w->cs;
			p->cluster = c;
			w->npend++;
		}
		memcpy(p->data + in, buf, n);
		for (uint64_t u = in / w->unit; u < (in + n) / w->unit; u++)
			p->mask |= 1u << (w->extended ? u : 0);
		buf = (const uint8_t *)buf + n;
		off += n;
		len -= n;
	}
	return 0;
}

static uint64_t unit_bits_below_vsize(const struct qcow2_writer *w, uint64_t cluster)
{
	uint64_t bits = 0;

	for (unsigned u = 0; u < 32; u++)
		if (cluster * w->cs + u * w->unit < w->vsize)
			bits |= 1ULL << u;
	return bits;
}

/* Decide where cluster p goes and what its L2 entry becomes. */
static int plan(struct qcow2_writer *w, struct pending *p)
{
	uint64_t e, b, l1i = p->cluster / w->l2_entries;
	int rc = l2_entry(w, p->cluster, &e, &b);

	if (rc)
		return rc;
	if (!(w->l1[l1i] & QCOW2_OFFSET_MASK)) {
		for (struct pending *q = w->pend; q < p; q++)
			if (q->new_l2 && q->cluster / w->l2_entries == l1i)
				p->new_l2 = q->new_l2;
		if (!p->new_l2 && (rc = alloc_cluster(w, &p->new_l2)))
			return rc;
	}
	if (in_place(w, e)) {
		/* Standard L2: the whole cluster is ours, so its zero flag goes. */
		p->host = e & QCOW2_OFFSET_MASK;
		p->new_entry = (e & ~QCOW2_L2_ZERO) | OFLAG_COPIED;
		p->new_bitmap = w->extended ? ((b | p->mask) & ~((uint64_t)p->mask << 32)) : 0;
		return 0;
	}
	if ((rc = alloc_cluster(w, &p->host)))
		return rc;
	p->new_entry = p->host | OFLAG_COPIED;
	if (e & QCOW2_L2_COMPRESSED)
		p->old_compressed = e;
	if (w->extended && !(e & QCOW2_L2_COMPRESSED)) {
		/* Unallocated or zero subclusters stay so; only ours become data. */
		p->new_bitmap = p->mask | (b & ~((uint64_t)p->mask << 32) & 0xffffffff00000000ULL);
		return 0;
	}
	p->full = true;
	p->new_bitmap = w->extended ? unit_bits_below_vsize(w, p->cluster) : 0;
	return 0;
}

/*
 * Materialise a cluster that gets a new host cluster as a whole: what the
 * view reads there now, with our units on top. Done for the whole batch
 * before anything is written, so a read that fails (a hostile layer below)
 * leaves no refcount behind for a cluster nothing will point at.
 */
static int materialise(struct qcow2_writer *w, struct pending *p)
{
	uint64_t base = p->cluster * w->cs;
	uint64_t vlen = w->vsize - base < w->cs ? w->vsize - base : w->cs;
	uint8_t *buf = w->spare;
	int rc;

	if (!buf && !(buf = w->spare = malloc(w->cs)))
		return -ENOMEM;
	memset(buf + vlen, 0, w->cs - vlen);
	rc = w->fill(w->fill_opaque, buf, vlen, base);
	for (unsigned u = 0; !rc && u < (w->extended ? 32u : 1u); u++)
		if (p->mask & (1u << u))
			memcpy(buf + u * w->unit, p->data + u * w->unit, w->unit);
	if (rc)
		return rc;
	memcpy(p->data, buf, w->cs);
	return 0;
}

static bool whole_cluster(const struct qcow2_writer *w, const struct pending *p)
{
	return p->full || p->mask == (w->extended ? 0xffffffffu : 1u);
}

/* Clusters i.. written whole to adjacent host clusters: how many (one pwrite). */
static int whole_run(const struct qcow2_writer *w, int i)
{
	int j = i + 1;

	if (!whole_cluster(w, &w->pend[i]))
		return 0;
	while (j < w->npend && whole_cluster(w, &w->pend[j]) &&
	       w->pend[j].host == w->pend[j - 1].host + w->cs)
		j++;
	return j - i;
}

static int write_data(struct qcow2_writer *w, struct pending *p)
{
	int rc;

	/* Adjacent units go out as one write: a whole cluster is one pwrite, not 32. */
	for (unsigned u = 0, n = w->extended ? 32u : 1u, v; u < n; u = v) {
		if (!(p->mask & (1u << u))) {
			v = u + 1;
			continue;
		}
		for (v = u + 1; v < n && p->mask & (1u << v); v++)
			;
		rc = wwrite(w, p->data + u * w->unit, (v - u) * w->unit, p->host + u * w->unit);
		if (rc)
			return rc;
	}
	return 0;
}

/*
 * The L2 entries of a batch are changed in the cached table and written as
 * one span per table (a merge moves clusters in order, so a batch's entries
 * in one table are mostly adjacent): one pwrite instead of one per cluster.
 * A new table is written whole, before L1 points at it. The span goes out
 * before another table is fetched, so the slot cannot be reused under it.
 */
struct l2_span {
	struct cached_table *t;   /* NULL: none open */
	uint64_t lo, hi;          /* byte range of t changed */
	bool whole;
};

static int span_write(struct qcow2_writer *w, struct l2_span *sp)
{
	int rc = 0;

	if (sp->t)
		rc = sp->whole ? wwrite(w, sp->t->buf, w->cs, sp->t->off)
			       : wwrite(w, sp->t->buf + sp->lo, sp->hi - sp->lo, sp->t->off + sp->lo);
	sp->t = NULL;
	return rc;
}

/* Debug builds: every refcount this commit set is on disk and flushed (qemu's rule 2). */
static bool refcounts_durable(const struct qcow2_writer *w)
{
	for (int i = 0; i < L2_CACHE_SIZE; i++)
		if (w->rbc[i].dirty)
			return false;
	return !w->reftable_dirty && !w->unflushed;
}

/* Debug builds: an allocated entry points inside the clusters the writer counted. */
static bool entry_inside(const struct qcow2_writer *w, uint64_t entry)
{
	uint64_t host = entry & QCOW2_OFFSET_MASK;

	return (entry & QCOW2_L2_COMPRESSED) || host == 0 ||
	       (host % w->cs == 0 && host + w->cs <= w->next_free * w->cs && host + w->cs <= w->io->size);
}

static int write_entry(struct qcow2_writer *w, struct pending *p, struct l2_span *sp)
{
	uint64_t l1i = p->cluster / w->l2_entries, l2i = p->cluster % w->l2_entries;
	uint64_t l2off = p->new_l2 ? p->new_l2 : w->l1[l1i] & QCOW2_OFFSET_MASK;
	uint64_t at = l2i * w->l2e_size;
	struct cached_table *t;
	uint8_t ent[16];
	int rc = 0;

	if (sp->t && sp->t->off == l2off) {
		t = sp->t;
	} else {
		bool fresh = p->new_l2 != 0;

		if ((rc = span_write(w, sp)))
			return rc;
		/* A new table is zeros until its first entry is written; later entries reload it. */
		for (struct pending *q = w->pend; fresh && q < p; q++)
			fresh = q->new_l2 != p->new_l2;
		t = cache_get(w, w->l2c, &w->l2c_next, l2off, !fresh, &rc);
		if (!t)
			return rc;
		*sp = (struct l2_span){ t, at, at + w->l2e_size, p->new_l2 != 0 };
	}
	VSTORFS_CHECK(entry_inside(w, p->new_entry));
	VSTORFS_CHECK(!p->new_l2 || entry_inside(w, p->new_l2));
	put64(ent, p->new_entry);
	put64(ent + 8, p->new_bitmap);
	memcpy(t->buf + at, ent, w->l2e_size);
	if (at < sp->lo)
		sp->lo = at;
	if (at + w->l2e_size > sp->hi)
		sp->hi = at + w->l2e_size;
	return 0;
}

static int free_compressed(struct qcow2_writer *w, uint64_t entry)
{
	uint64_t off, len, end;

	qcow2_decode_compressed(entry, w->cluster_bits, &off, &len);
	end = off + len;

	for (uint64_t c = off / w->cs; c * w->cs < end; c++) {
		int rc = refcount_add(w, c, -1);

		if (rc)
			return rc;
	}
	return 0;
}

int qcow2_writer_commit(struct qcow2_writer *w)
{
	int rc = 0;

	if (w->failed)
		return w->failed;
	if (!w->npend)
		return 0;
	for (int i = 0; i < w->npend && !rc; i++)
		rc = plan(w, &w->pend[i]);
	for (int i = 0; i < w->npend && !rc; i++)
		if (w->pend[i].full)
			rc = materialise(w, &w->pend[i]);
	/* (1) refcounts and data, then flush */
	if (!rc)
		rc = refblocks_write(w);
	for (int i = 0, n; i < w->npend && !rc; i += n) {
		n = whole_run(w, i);
		if (n) {
			rc = wwrite(w, w->pend[i].data, n * w->cs, w->pend[i].host);
		} else {
			n = 1;
			rc = write_data(w, &w->pend[i]);
		}
	}
	if (!rc)
		rc = wflush(w);
	/* (2) L2 entries, then flush */
	struct l2_span span = { 0 };

	VSTORFS_CHECK(rc || refcounts_durable(w));

	for (int i = 0; i < w->npend && !rc; i++)
		rc = write_entry(w, &w->pend[i], &span);
	if (!rc)
		rc = span_write(w, &span);
	if (!rc)
		rc = wflush(w);
	/* (3) L1 entries for new L2 tables, then flush */
	VSTORFS_CHECK(rc || !w->unflushed);
	for (int i = 0; i < w->npend && !rc; i++) {
		struct pending *p = &w->pend[i];
		uint64_t l1i = p->cluster / w->l2_entries;
		uint8_t ent[8];

		if (!p->new_l2 || (w->l1[l1i] & QCOW2_OFFSET_MASK))
			continue;
		w->l1[l1i] = p->new_l2 | OFLAG_COPIED;
		put64(ent, w->l1[l1i]);
		rc = wwrite(w, ent, 8, w->l1_off + 8 * l1i);
	}
	if (!rc)
		rc = wflush(w);
	/* (4) release replaced compressed clusters: no entry points at them any more (rule 3) */
	VSTORFS_CHECK(rc || !w->unflushed);
	for (int i = 0; i < w->npend && !rc; i++)
		if (w->pend[i].old_compressed)
			rc = free_compressed(w, w->pend[i].old_compressed);
	if (!rc)
		rc = refblocks_write(w);
	if (!rc)
		rc = wflush(w);
	w->npend = 0;
	if (rc) {
		vlog(LOG_ERR, "%s: writing merged data failed: %s", w->io->name, strerror(-rc));
		/* The plan's allocations are in memory only: nothing more may be written. */
		w->failed = rc;
	}
	return rc;
}

int qcow2_writer_set_backing(struct qcow2_writer *w, const char *backing)
{
	uint8_t sector[512];
	uint64_t len = backing ? strlen(backing) : 0, at = 0;
	int rc;

	if (len > 1023)
		return -EINVAL;
	if (len) {
		/* Free space in the header cluster that the current string does not use. */
		uint64_t old_end = w->hdr_backing_off + w->hdr_backing_len;

		if (w->hdr_backing_off >= w->hdr_ext_end + len || !w->hdr_backing_off)
			at = w->hdr_ext_end;
		else
			at = (old_end + 7) & ~7ULL;
		if (at + len > w->cs || at + len > 65536)
			return fail(w, -ENOSPC, "no room for the backing file name in the header");
		if ((rc = wwrite(w, backing, len, at)) || (rc = wflush(w)))
			return rc;
	}
	if ((rc = layer_pread(w->io, sector, sizeof(sector), 0)))
		return rc;
	put64(sector + 8, at);
	put32(sector + 16, len);
	if ((rc = wwrite(w, sector, sizeof(sector), 0)) || (rc = wflush(w)))
		return rc;
	w->hdr_backing_off = at;
	w->hdr_backing_len = len;
	return 0;
}
