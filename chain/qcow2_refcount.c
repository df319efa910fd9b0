/*
 * qcow2_refcount: see qcow2_refcount.h. Refcount blocks are kept in
 * memory once read (their on-disk size: 2 bytes per cluster for the usual
 * 16-bit refcounts), so a whole-image walk reads each block once.
 */
#include "qcow2_refcount.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "qcow2_check.h"

#define MAX_L1_BYTES        (32ULL << 20)   /* qemu's QCOW_MAX_L1_SIZE */
#define MAX_REFTABLE_BYTES  (8ULL << 20)    /* qemu's QCOW_MAX_REFTABLE_SIZE */
#define HEADER_READ         65536
#define EXT_BITMAPS         0x23852875u
#define GROW_LIMIT_CLUSTERS (1ULL << 40)

void qmeta_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (56 - 8 * i);
}

void qmeta_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (24 - 8 * i);
}

int qmeta_fail(struct qmeta *m, int err, const char *why)
{
	snprintf(m->why, sizeof(m->why), "%s", why);
	vlog(LOG_ERR, "%s: %s", m->io->name, why);
	return err;
}

/* ---- refcount blocks ---- */

static int grow_rb(struct qmeta *m, uint64_t n)
{
	uint8_t **rb;
	bool *d;

	if (n <= m->rb_cap)
		return 0;
	rb = realloc(m->rb, n * sizeof(*rb));
	if (!rb)
		return -ENOMEM;
	m->rb = rb;
	d = realloc(m->rb_dirty, n * sizeof(*d));
	if (!d)
		return -ENOMEM;
	m->rb_dirty = d;
	memset(m->rb + m->rb_cap, 0, (n - m->rb_cap) * sizeof(*rb));
	memset(m->rb_dirty + m->rb_cap, 0, (n - m->rb_cap) * sizeof(*d));
	m->rb_cap = n;
	return 0;
}

/* The block holding cluster's refcount: *blk NULL when there is none (refcount 0). */
static int block_of(struct qmeta *m, uint64_t cluster, uint8_t **blk)
{
	uint64_t b = cluster / m->rpb, off;
	int rc;

	*blk = NULL;
	if (b >= m->rt_n)
		return 0;
	if (m->rb[b]) {
		*blk = m->rb[b];
		return 0;
	}
	off = m->rt[b] & QCOW2_OFFSET_MASK;
	if (!off)
		return 0;
	if (off % m->cs || off / m->cs >= m->nclusters)
		return qmeta_fail(m, -EIO, "refcount block outside the image");
	if (!(m->rb[b] = malloc(m->cs)))
		return -ENOMEM;
	rc = layer_pread(m->io, m->rb[b], m->cs, off);
	if (rc) {
		free(m->rb[b]);
		m->rb[b] = NULL;
		return rc;
	}
	*blk = m->rb[b];
	return 0;
}

int qmeta_rc_get(struct qmeta *m, uint64_t cluster, uint64_t *v)
{
	uint8_t *b;
	int rc = block_of(m, cluster, &b);

	*v = 0;
	if (rc)
		return rc;
	if (b)
		*v = qcow2_refcount_entry_get(b, cluster % m->rpb, m->order);
	return 0;
}

int qmeta_rc_add(struct qmeta *m, uint64_t cluster, int64_t delta)
{
	uint8_t *b;
	uint64_t v;
	int rc = block_of(m, cluster, &b);

	if (rc)
		return rc;
	v = b ? qcow2_refcount_entry_get(b, cluster % m->rpb, m->order) : 0;
	if ((delta < 0 && v < (uint64_t)-delta) || (delta > 0 && m->rmax - v < (uint64_t)delta))
		return qmeta_fail(m, -ERANGE, "refcount out of range");
	if (!b)
		return qmeta_fail(m, -EIO, "refcount block missing");
	qcow2_refcount_entry_set(b, cluster % m->rpb, m->order, v + delta);
	m->rb_dirty[cluster / m->rpb] = true;
	return 0;
}

static bool block_present(const struct qmeta *m, uint64_t b)
{
	return b < m->rt_n && (m->rb[b] || (m->rt[b] & QCOW2_OFFSET_MASK));
}

uint64_t qmeta_rc_end(const struct qmeta *m)
{
	uint64_t end = m->nclusters;

	for (uint64_t b = m->rt_n; b-- > 0;)
		if (block_present(m, b)) {
			if ((b + 1) * m->rpb > end)
				end = (b + 1) * m->rpb;
			break;
		}
	return end;
}

/* First run of len free clusters at or after from. */
static int find_free(struct qmeta *m, uint64_t from, uint64_t len, uint64_t *start)
{
	uint64_t run = 0, c = from ? from : 1;

	for (; run < len; c++) {
		uint64_t v;
		int rc;

		if (c >= GROW_LIMIT_CLUSTERS)
			return -ENOSPC;
		if (c / m->rpb >= m->rt_n) {  /* no table entry: free from here on */
			if (!run)
				*start = c;
			run = len;
			break;
		}
		if ((rc = qmeta_rc_get(m, c, &v)))
			return rc;
		if (v) {
			run = 0;
			continue;
		}
		if (!run++)
			*start = c;
	}
	return 0;
}

int qmeta_alloc(struct qmeta *m, uint64_t n, uint64_t *off)
{
	uint64_t start = m->hint, k = 0, t = 0, total;
	int rc;

	if (!n)
		return -EINVAL;
	for (int iter = 0;; iter++) {
		uint64_t first_b, last_b, missing = 0, need_t = 0;

		if (iter > 64)
			return qmeta_fail(m, -EIO, "cannot place refcount structures");
		if ((rc = find_free(m, start, n + k + t, &start)))
			return rc;
		total = n + k + t;
		first_b = start / m->rpb;
		last_b = (start + total - 1) / m->rpb;
		for (uint64_t b = first_b; b <= last_b; b++)
			missing += !block_present(m, b);
		if (last_b >= m->rt_n) {
			uint64_t entries = (last_b + 1) + (last_b + 1) / 2 + 1;

			need_t = (entries * 8 + m->cs - 1) / m->cs;
			if (need_t * m->cs > MAX_REFTABLE_BYTES)
				return qmeta_fail(m, -ENOSPC, "the refcount table would pass 8 MiB");
		}
		if (missing == k && need_t == t)
			break;
		k = missing > k ? missing : k;
		t = need_t > t ? need_t : t;
	}
	if (!(m->flags & QCOW2_SNAP_GROW) && (start + total) * m->cs > m->io->size)
		return qmeta_fail(m, -ENOSPC, "no room in the layer for new clusters");
	if (t) {
		uint64_t n_new = t * m->cs / 8, *rt = calloc(n_new, 8);

		if (!rt || (rc = grow_rb(m, n_new))) {
			free(rt);
			return -ENOMEM;
		}
		memcpy(rt, m->rt, m->rt_n * 8);
		if (m->old_rt_off) {
			/* A table allocated earlier in this operation, never referenced: drop it. */
			if ((rc = qmeta_free(m, m->rt_off, (uint64_t)m->rt_clusters * m->cs)))
				return rc;
		} else {
			m->old_rt_off = m->rt_off;
			m->old_rt_clusters = m->rt_clusters;
		}
		free(m->rt);
		m->rt = rt;
		m->rt_n = n_new;
		m->rt_off = (start + n + k) * m->cs;
		m->rt_clusters = t;
		m->rt_dirty = true;
	}
	{
		uint64_t next = start + n;

		for (uint64_t b = start / m->rpb; b <= (start + total - 1) / m->rpb; b++) {
			if (block_present(m, b))
				continue;
			if (!(m->rb[b] = calloc(1, m->cs)))
				return -ENOMEM;
			m->rt[b] = next++ * m->cs;
			m->rb_dirty[b] = true;
			m->rt_dirty = true;
		}
	}
	for (uint64_t c = start; c < start + total; c++)
		if ((rc = qmeta_rc_add(m, c, 1)))
			return rc;
	*off = start * m->cs;
	m->hint = start + total;
	return 0;
}

int qmeta_free(struct qmeta *m, uint64_t off, uint64_t bytes)
{
	for (uint64_t c = off / m->cs; bytes && c <= (off + bytes - 1) / m->cs; c++) {
		int rc = qmeta_rc_add(m, c, -1);

		if (rc)
			return rc;
	}
	return 0;
}

static int write_blocks(struct qmeta *m)
{
	bool any = false;
	int rc;

	for (uint64_t b = 0; b < m->rb_cap; b++) {
		if (!m->rb_dirty[b])
			continue;
		rc = layer_pwrite(m->io, m->rb[b], m->cs, m->rt[b] & QCOW2_OFFSET_MASK);
		if (rc)
			return rc;
		m->rb_dirty[b] = false;
		any = true;
	}
	return any ? layer_flush(m->io) : 0;
}

static int write_table(struct qmeta *m)
{
	uint64_t bytes = (uint64_t)m->rt_clusters * m->cs;
	uint8_t *buf = calloc(1, bytes);
	int rc;

	if (!buf)
		return -ENOMEM;
	for (uint64_t i = 0; i < m->rt_n && i * 8 < bytes; i++)
		qmeta_put64(buf + 8 * i, m->rt[i]);
	rc = layer_pwrite(m->io, buf, bytes, m->rt_off);
	free(buf);
	return rc ? rc : layer_flush(m->io);
}

int qmeta_commit_refs(struct qmeta *m)
{
	int rc;

	if ((rc = write_blocks(m)))
		return rc;
	if (!m->rt_dirty)
		return 0;
	/* New blocks are on disk; now the table may name them. */
	if ((rc = write_table(m)))
		return rc;
	if (m->old_rt_off) {
		uint8_t hdr[12];

		qmeta_put64(hdr, m->rt_off);
		qmeta_put32(hdr + 8, m->rt_clusters);
		if ((rc = layer_pwrite(m->io, hdr, 12, QCOW2_HDR_REFTABLE)) || (rc = layer_flush(m->io)))
			return rc;
		m->h.refcount_table_offset = m->rt_off;
		m->h.refcount_table_clusters = m->rt_clusters;
		rc = qmeta_free(m, m->old_rt_off, (uint64_t)m->old_rt_clusters * m->cs);
		m->old_rt_off = 0;
		if (rc || (rc = write_blocks(m)))
			return rc;
	}
	m->rt_dirty = false;
	return 0;
}

/* ---- tables ---- */

int qmeta_read_table(struct qmeta *m, uint64_t off, uint8_t *buf)
{
	return layer_pread(m->io, buf, m->cs, off);
}

int qmeta_write_l1(struct qmeta *m)
{
	uint64_t bytes = (uint64_t)m->h.l1_size * 8;
	uint8_t *buf = malloc(bytes + 1);
	int rc;

	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < m->h.l1_size; i++)
		qmeta_put64(buf + 8 * i, m->l1[i]);
	rc = bytes ? layer_pwrite(m->io, buf, bytes, m->h.l1_offset) : 0;
	free(buf);
	return rc ? rc : layer_flush(m->io);
}

/* ---- open ---- */

static int scan_extensions(struct qmeta *m, const uint8_t *hdr, size_t len)
{
	char fmt[64];
	const char *why = qcow2_decode_extensions(&m->h, hdr, len, fmt, sizeof(fmt));
	uint64_t off = m->h.version < 3 ? QCOW2_HEADER_V2 : m->h.header_length;

	if (why)
		return qmeta_fail(m, strstr(why, "not supported") ? -ENOTSUP : -EIO, why);
	while (off + 8 <= len) {
		uint32_t type = qcow2_be32(hdr + off), elen = qcow2_be32(hdr + off + 4);

		if (type == QCOW2_EXT_END)
			break;
		if (type == EXT_BITMAPS)
			return qmeta_fail(m, -ENOTSUP, "images with persistent bitmaps are not supported");
		off += 8 + ((elen + 7ULL) & ~7ULL);
	}
	return 0;
}

static bool table_ok(const struct qmeta *m, uint64_t off, uint64_t bytes)
{
	return !bytes || (off % m->cs == 0 && off <= m->io->size && bytes <= m->io->size - off);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Refcount blocks inside the layer and all different: so the blocks held in
 * memory never exceed the layer's size, whatever the table says.
 */
static int distinct_blocks(struct qmeta *m)
{
	uint64_t *offs = malloc((m->rt_n + 1) * 8), n = 0;
	int rc = 0;

	if (!offs)
		return -ENOMEM;
	for (uint64_t b = 0; b < m->rt_n; b++) {
		uint64_t off = m->rt[b] & QCOW2_OFFSET_MASK;

		if (!off)
			continue;
		if (off % m->cs || off / m->cs >= m->nclusters) {
			rc = qmeta_fail(m, -EIO, "refcount block outside the image");
			break;
		}
		offs[n++] = off;
	}
	qsort(offs, n, 8, cmp_u64);
	for (uint64_t i = 1; !rc && i < n; i++)
		if (offs[i] == offs[i - 1])
			rc = qmeta_fail(m, -EIO, "two refcount table entries name one block");
	free(offs);
	return rc;
}

int qmeta_open(struct layer_io *io, unsigned flags, struct qmeta **out)
{
	struct qmeta *m = calloc(1, sizeof(*m));
	size_t hlen = io->size < HEADER_READ ? io->size : HEADER_READ;
	uint8_t *hdr = malloc(HEADER_READ), *tab = NULL;
	uint64_t snap_off, span, bytes;
	const char *why;
	int rc;

	*out = NULL;
	if (!m || !hdr) {
		free(m);
		free(hdr);
		return -ENOMEM;
	}
	m->io = io;
	m->flags = flags;
	if ((rc = layer_pread(io, hdr, hlen, 0)))
		goto out;
	if ((why = qcow2_decode_header(hdr, hlen, &m->h))) {
		rc = qmeta_fail(m, strstr(why, "not supported") || strstr(why, "unknown incompat") ? -ENOTSUP : -EIO,
				why);
		goto out;
	}
	m->cb = m->h.cluster_bits;
	m->cs = 1ULL << m->cb;
	if (hlen > m->cs)
		hlen = m->cs;
	if ((rc = scan_extensions(m, hdr, hlen)))
		goto out;
	if (m->h.incompat & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)) {
		rc = qmeta_fail(m, -ENOTSUP, "image marked dirty or corrupt (qemu-img check -r all first)");
		goto out;
	}
	if (m->h.refcount_order == 0) {
		rc = qmeta_fail(m, -ENOTSUP, "1-bit refcounts cannot share clusters");
		goto out;
	}
	snap_off = qcow2_be64(hdr + 64);
	m->extended = m->h.incompat & QCOW2_INCOMPAT_EXTL2;
	m->l2e_size = m->extended ? 16 : 8;
	m->l2_entries = m->cs / m->l2e_size;
	m->order = m->h.refcount_order;
	m->rpb = m->cs * 8 >> m->order;
	m->rmax = m->order == 6 ? UINT64_MAX : (1ULL << (1u << m->order)) - 1;
	m->nclusters = (io->size + m->cs - 1) / m->cs;
	span = m->cs * m->l2_entries;
	bytes = (uint64_t)m->h.l1_size * 8;
	if (bytes > MAX_L1_BYTES || !table_ok(m, m->h.l1_offset, bytes) ||
	    m->h.l1_size < (m->h.size + span - 1) / span) {
		rc = qmeta_fail(m, -EIO, "active L1 table invalid");
		goto out;
	}
	m->rt_off = m->h.refcount_table_offset;
	m->rt_clusters = m->h.refcount_table_clusters;
	m->rt_n = (uint64_t)m->rt_clusters * m->cs / 8;
	if ((uint64_t)m->rt_clusters * m->cs > MAX_REFTABLE_BYTES || !m->rt_clusters ||
	    !table_ok(m, m->rt_off, (uint64_t)m->rt_clusters * m->cs)) {
		rc = qmeta_fail(m, -EIO, "refcount table invalid");
		goto out;
	}
	rc = -ENOMEM;
	m->l1 = calloc(m->h.l1_size + 1, 8);
	m->rt = calloc(m->rt_n + 1, 8);
	tab = malloc((bytes > m->rt_n * 8 ? bytes : m->rt_n * 8) + 8);
	if (!m->l1 || !m->rt || !tab || grow_rb(m, m->rt_n))
		goto out;
	if (bytes && (rc = layer_pread(io, tab, bytes, m->h.l1_offset)))
		goto out;
	for (uint32_t i = 0; i < m->h.l1_size; i++)
		m->l1[i] = qcow2_be64(tab + 8 * i);
	if ((rc = layer_pread(io, tab, m->rt_n * 8, m->rt_off)))
		goto out;
	for (uint64_t i = 0; i < m->rt_n; i++)
		m->rt[i] = qcow2_be64(tab + 8 * i);
	if ((rc = distinct_blocks(m)))
		goto out;
	rc = qsnap_parse(io, &m->h, snap_off, &m->snaps);
	if (rc)
		qmeta_fail(m, rc, m->snaps.error);
out:
	free(hdr);
	free(tab);
	if (rc) {
		qmeta_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

void qmeta_close(struct qmeta *m)
{
	if (!m)
		return;
	for (uint64_t b = 0; b < m->rb_cap; b++)
		free(m->rb[b]);
	free(m->rb);
	free(m->rb_dirty);
	free(m->rt);
	free(m->l1);
	qcow2_snapshot_list_free(&m->snaps);
	free(m);
}

/* ---- walking references ---- */

int qmeta_walk_l1(struct qmeta *m, const uint64_t *l1, uint64_t n, qmeta_ref_fn fn, void *opaque)
{
	uint8_t *t = malloc(m->cs);
	int rc = 0;

	if (!t)
		return -ENOMEM;
	for (uint64_t i = 0; i < n && !rc; i++) {
		uint64_t l2 = l1[i] & QCOW2_OFFSET_MASK;

		if (!l2)
			continue;
		if (l2 % m->cs || l2 / m->cs >= m->nclusters) {
			rc = qmeta_fail(m, -EIO, "L1 entry points outside the image");
			break;
		}
		if ((rc = fn(m, opaque, l2 / m->cs, 1)) || (rc = qmeta_read_table(m, l2, t)))
			break;
		for (uint64_t j = 0; j < m->l2_entries && !rc; j++) {
			uint64_t e = qcow2_be64(t + j * m->l2e_size), h = e & QCOW2_OFFSET_MASK;

			if (e & QCOW2_L2_COMPRESSED) {
				uint64_t coff, clen;

				qcow2_decode_compressed(e, m->cb, &coff, &clen);
				for (uint64_t c = coff / m->cs; !rc && c <= (coff + clen - 1) / m->cs; c++)
					rc = c >= m->nclusters ? qmeta_fail(m, -EIO, "compressed cluster outside the image")
							       : fn(m, opaque, c, 3);
			} else if (h) {
				if (h % m->cs || h / m->cs >= m->nclusters)
					rc = qmeta_fail(m, -EIO, "L2 entry points outside the image");
				else
					rc = fn(m, opaque, h / m->cs, 2);
			}
		}
	}
	free(t);
	return rc;
}

int qmeta_count_refs(struct qmeta *m, uint32_t **refs_out, struct qcow2_check_result *res)
{
	struct qcow2_check_result dummy;
	struct qcow2_check_result *r = res ? res : &dummy;
	struct qcow2_layer_check ck;
	uint32_t *refs = NULL;
	uint64_t n = 0;
	int rc = qcow2_check_layer_refs(m->io, &ck, refs_out ? &refs : NULL, &n);

	memset(r, 0, sizeof(*r));
	r->clusters = m->nclusters;
	if (rc) {
		if (rc != -ENOMEM && rc != -ENOTSUP) {
			r->errors = 1;
			snprintf(r->first_error, sizeof(r->first_error), "cannot walk the metadata (%s)",
				 strerror(-rc));
		}
		return rc;
	}
	r->errors = ck.corruptions - ck.copied + ck.check_errors + ck.unreadable;
	r->copied_errors = ck.copied;
	r->leaks = ck.leaks;
	snprintf(r->first_error, sizeof(r->first_error), "%s", ck.first);
	if (refs_out) {
		/* Indexed up to m->nclusters, whatever the walk counted. */
		uint32_t *out = calloc(m->nclusters + 1, sizeof(*out));

		if (!out) {
			free(refs);
			return -ENOMEM;
		}
		memcpy(out, refs, (n < m->nclusters ? n : m->nclusters) * sizeof(*out));
		free(refs);
		*refs_out = out;
	}
	return 0;
}
