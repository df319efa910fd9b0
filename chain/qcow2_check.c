/*
 * qcow2_check: see qcow2_check.h for the rules. One pass builds the
 * references of every cluster in memory (the "in-memory refcount table",
 * as qemu calls it), then compares it with the stored refcounts and the
 * active COPIED flags. Read-only; reads each table once, refcount blocks
 * through a one-block cache.
 *
 * The counters are 16 bits wide when the image's refcounts are (the usual
 * refcount_bits=16 and narrower: 128 MiB for the largest file accepted),
 * else 32 bits; a count saturates at the image's largest refcount, as
 * qemu's does, or at 2^32 - 1 for wider refcounts (more references than
 * a file of 64 Mi clusters can hold).
 */
#include "qcow2_check.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2_format.h"
#include "qcow2_snapshot.h"

#define OFLAG_COPIED       (1ULL << 63)
#define L1E_RESERVED       0x7f000000000001ffULL
#define L2E_STD_RESERVED   0x3f000000000001feULL
#define REFT_RESERVED      0x1ffULL
#define BITMAP_ALLOC       0xffffffffULL
#define EXT_BITMAPS        0x23852875u
#define MAX_CLUSTERS       (64ULL << 20)
#define MAX_L1_BYTES       (32ULL << 20)   /* qemu's QCOW_MAX_L1_SIZE */
#define MAX_REFTABLE_BYTES (8ULL << 20)    /* qemu's QCOW_MAX_REFTABLE_SIZE */
#define HEADER_READ        65536

struct ck {
	struct layer_io *io;
	struct qcow2_layer_check *res;
	struct qcow2_header h;
	unsigned cb;
	uint64_t cs, flen, es;      /* cluster size, file length, L2 entry size */
	bool ext;
	uint64_t rmax, limit;       /* largest refcount; largest count kept */
	uint16_t *r16;              /* references per cluster (one of the two) */
	uint32_t *r32;
	uint64_t n, cap;            /* clusters counted so far; entries allocated */
	uint64_t *reftable, rt_n;
	uint8_t *l2;                /* one cluster */
	uint8_t *rb;                /* the cached refcount block */
	uint64_t rb_off;            /* its offset, 0: none */
	struct qcow2_snapshot_list snaps;
};

static void problem(struct ck *k, const char *fmt, uint64_t a, uint64_t b)
{
	k->res->corruptions++;
	if (!k->res->first[0])
		snprintf(k->res->first, sizeof(k->res->first), fmt, (unsigned long long)a,
			 (unsigned long long)b);
}

/* len bytes at off as qemu reads the file: zeros past its end. */
static int read_file(struct ck *k, void *buf, uint64_t len, uint64_t off)
{
	uint64_t have = off >= k->flen ? 0 : k->flen - off < len ? k->flen - off : len;
	int rc = have ? layer_pread(k->io, buf, have, off) : 0;

	memset((uint8_t *)buf + have, 0, len - have);
	return rc;
}

static uint64_t refs_get(const struct ck *k, uint64_t c)
{
	return k->r16 ? k->r16[c] : k->r32[c];
}

static void refs_set(struct ck *k, uint64_t c, uint64_t v)
{
	if (k->r16)
		k->r16[c] = v;
	else
		k->r32[c] = v;
}

/* One reference to every cluster of [off, off + size) (qcow2_inc_refcounts_imrt). */
static void inc(struct ck *k, uint64_t off, uint64_t size)
{
	if (!size)
		return;
	if (off + size > k->flen && off + size - k->flen >= k->cs) {
		problem(k, "a reference to %llu+%llu, a cluster or more past the end of the file", off, size);
		return;
	}
	for (uint64_t c = off >> k->cb; c <= (off + size - 1) >> k->cb && c < k->cap; c++) {
		uint64_t v;

		if (c >= k->n)
			k->n = c + 1;
		if ((v = refs_get(k, c)) < k->limit)
			refs_set(k, c, v + 1);
		else if (k->limit == k->rmax)
			problem(k, "cluster %llu: more references than refcount_bits can count%.0llu", c, 0);
	}
}

static void check_compressed(struct ck *k, uint64_t e, uint64_t bm)
{
	uint64_t coff, clen;

	if (e & OFLAG_COPIED) {
		problem(k, "a compressed cluster (entry %llx) with the COPIED flag%.0llu", e, 0);
		e &= ~OFLAG_COPIED;
	}
	if (bm) {
		problem(k, "a compressed cluster (entry %llx) with a subcluster bitmap %llx", e, bm);
		return;
	}
	qcow2_decode_compressed(e, k->cb, &coff, &clen);
	inc(k, coff, clen);
}

/* check_refcounts_l2: the entries of the L2 table at l2off. */
static int check_l2(struct ck *k, uint64_t l2off)
{
	int rc = read_file(k, k->l2, k->cs, l2off);

	if (rc)
		return rc;
	for (uint64_t i = 0; i < k->cs / k->es; i++) {
		const uint8_t *p = k->l2 + i * k->es;
		uint64_t e = qcow2_be64(p), bm = k->ext ? qcow2_be64(p + 8) : 0, off = e & QCOW2_OFFSET_MASK;

		if (e & QCOW2_L2_COMPRESSED) {
			check_compressed(k, e, bm);
			continue;
		}
		if (e & L2E_STD_RESERVED)
			problem(k, "L2 table %llu: entry %llx with reserved bits set", l2off, e);
		if (!k->ext && (e & QCOW2_L2_ZERO) && k->h.version < 3) {
			k->res->unreadable++;
			if (!k->res->first[0])
				snprintf(k->res->first, sizeof(k->res->first), "a zero flag in a version 2 image");
		}
		if (!off) {
			if (bm & BITMAP_ALLOC)
				problem(k, "an unallocated cluster with allocated subclusters (bitmap %llx)%.0llu", bm,
					0);
			continue;
		}
		if ((bm >> 32) & bm)
			problem(k, "cluster at %llu: subclusters both allocated and zero (bitmap %llx)", off, bm);
		if (off % k->cs)
			problem(k, "a misaligned data cluster at %llu%.0llu", off, 0);
		inc(k, off, k->cs);
	}
	return 0;
}

/* check_refcounts_l1: the L1 table of n entries at off and what it reaches. */
static int check_l1(struct ck *k, uint64_t off, uint32_t n)
{
	uint64_t bytes = (uint64_t)n * 8;
	uint8_t *l1;
	int rc = 0;

	if (!n)
		return 0;
	inc(k, off, bytes);
	if (!(l1 = malloc(bytes)))
		return -ENOMEM;
	rc = read_file(k, l1, bytes, off);
	for (uint32_t i = 0; !rc && i < n; i++) {
		uint64_t e = qcow2_be64(l1 + 8 * i), l2off = e & QCOW2_OFFSET_MASK;

		if (!e)
			continue;
		if (e & L1E_RESERVED)
			problem(k, "an L1 entry %llx with reserved bits set%.0llu", e, 0);
		/* An entry with only flags names the header cluster as its L2
		 * table: qemu counts and reads it, and so does this. */
		inc(k, l2off, k->cs);
		if (l2off % k->cs)
			problem(k, "a misaligned L2 table at %llu%.0llu", l2off, 0);
		rc = check_l2(k, l2off);
	}
	free(l1);
	return rc;
}

static int check_snapshots(struct ck *k)
{
	for (unsigned i = 0; i < k->snaps.n; i++) {
		const struct qcow2_snapshot_info *s = &k->snaps.s[i];
		int rc;

		if (s->l1_offset % k->cs) {
			problem(k, "snapshot %llu: misaligned L1 table at %llu", i, s->l1_offset);
			continue;
		}
		if ((uint64_t)s->l1_size * 8 > MAX_L1_BYTES) {
			problem(k, "snapshot %llu: an L1 table of %llu entries", i, s->l1_size);
			continue;
		}
		if ((rc = check_l1(k, s->l1_offset, s->l1_size)))
			return rc;
	}
	if (k->snaps.n)
		inc(k, k->snaps.table_offset, k->snaps.table_size);
	if (k->h.version >= 3)
		for (unsigned i = 0; i < k->snaps.n; i++)
			if (k->snaps.s[i].extra_data_size < 16)
				problem(k, "snapshot table entry %llu is incomplete (%llu bytes of extra data)", i,
					k->snaps.s[i].extra_data_size);
	return 0;
}

/* check_refblocks: each refcount block is referenced once, inside the file. */
static void check_refblocks(struct ck *k)
{
	for (uint64_t b = 0; b < k->rt_n; b++) {
		uint64_t e = k->reftable[b], off = e & ~REFT_RESERVED;

		if (e & REFT_RESERVED)
			problem(k, "refcount table entry %llu (%llx) has reserved bits set", b, e);
		else if (off % k->cs)
			problem(k, "refcount block %llu at %llu is misaligned", b, off);
		else if (off >> k->cb >= k->n)
			problem(k, "refcount block %llu at %llu is outside the file", b, off);
		else if (off) {
			inc(k, off, k->cs);
			if (refs_get(k, off >> k->cb) != 1)
				problem(k, "refcount block %llu at %llu is referenced more than once", b, off);
		}
	}
}

/* The stored refcount of cluster c: 0, or 1 when its block is misaligned (unreadable). */
static int stored_refcount(struct ck *k, uint64_t c, uint64_t *v)
{
	uint64_t b = c / (k->cs * 8 >> k->h.refcount_order), off;
	int rc;

	*v = 0;
	if (b >= k->rt_n || !(off = k->reftable[b] & ~REFT_RESERVED))
		return 0;
	if (off % k->cs)
		return 1;
	if (off != k->rb_off) {
		k->rb_off = 0;
		if ((rc = read_file(k, k->rb, k->cs, off)))
			return rc;
		k->rb_off = off;
	}
	*v = qcow2_refcount_entry_get(k->rb, c % (k->cs * 8 >> k->h.refcount_order), k->h.refcount_order);
	return 0;
}

/* compare_refcounts */
static int compare(struct ck *k)
{
	for (uint64_t c = 0; c < k->n; c++) {
		uint64_t v, refs = refs_get(k, c);
		int rc = stored_refcount(k, c, &v);

		if (rc < 0)
			return rc;
		if (rc)
			k->res->check_errors++;
		else if (v < refs)
			problem(k, "cluster %llu: refcount %llu below its references", c, v);
		else if (v > refs)
			k->res->leaks++;
	}
	return 0;
}

static int copied_agrees(struct ck *k, uint64_t entry)
{
	uint64_t v;
	int rc = stored_refcount(k, (entry & QCOW2_OFFSET_MASK) >> k->cb, &v);

	if (rc)
		return rc < 0 ? rc : 0;   /* unreadable: qemu skips it silently */
	if ((v == 1) != !!(entry & OFLAG_COPIED)) {
		k->res->copied++;
		problem(k, "entry %llx: COPIED flag disagrees with refcount %llu", entry, v);
	}
	return 0;
}

/* check_oflag_copied, for the active L1 table (l1: its n entries, raw). */
static int check_copied(struct ck *k, const uint8_t *l1, uint32_t n)
{
	int rc;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t e = qcow2_be64(l1 + 8 * i), l2off = e & QCOW2_OFFSET_MASK, v;

		if (!l2off)
			continue;
		if ((rc = stored_refcount(k, l2off >> k->cb, &v)) < 0)
			return rc;
		if (rc)
			continue;
		if ((rc = copied_agrees(k, e)) || (rc = read_file(k, k->l2, k->cs, l2off)))
			return rc;
		for (uint64_t j = 0; j < k->cs / k->es; j++) {
			uint64_t l2e = qcow2_be64(k->l2 + j * k->es);

			if (!(l2e & QCOW2_L2_COMPRESSED) && (l2e & QCOW2_OFFSET_MASK) && (rc = copied_agrees(k, l2e)))
				return rc;
		}
	}
	return 0;
}

static int run_copied(struct ck *k)
{
	uint64_t bytes = (uint64_t)k->h.l1_size * 8;
	uint8_t *l1 = malloc(bytes + 1);
	int rc = l1 ? read_file(k, l1, bytes, k->h.l1_offset) : -ENOMEM;

	if (!rc)
		rc = check_copied(k, l1, k->h.l1_size);
	free(l1);
	return rc;
}

/* What qemu refuses to open, or what is not counted here. */
static int check_header(struct ck *k, const uint8_t *hdr, size_t hlen)
{
	uint64_t span, off;
	const char *why = qcow2_decode_header(hdr, hlen, &k->h);

	if (why)
		return strstr(why, "not supported") || strstr(why, "unknown incompat") ? -ENOTSUP : -EIO;
	k->cb = k->h.cluster_bits;
	k->cs = 1ULL << k->cb;
	k->ext = k->h.incompat & QCOW2_INCOMPAT_EXTL2;
	k->es = k->ext ? 16 : 8;
	if (k->h.crypt_method || (k->h.incompat & QCOW2_INCOMPAT_DATAFILE))
		return -ENOTSUP;
	for (off = k->h.version < 3 ? QCOW2_HEADER_V2 : k->h.header_length; off + 8 <= hlen && off + 8 <= k->cs;) {
		uint32_t type = qcow2_be32(hdr + off), len = qcow2_be32(hdr + off + 4);

		if (type == QCOW2_EXT_END)
			break;
		if (type == EXT_BITMAPS)
			return -ENOTSUP;
		off += 8 + ((len + 7ULL) & ~7ULL);
	}
	span = k->cs / k->es * k->cs;
	if ((uint64_t)k->h.l1_size * 8 > MAX_L1_BYTES || k->h.l1_size < k->h.size / span + !!(k->h.size % span) ||
	    k->h.l1_offset % k->cs)
		return -EIO;
	k->rt_n = (uint64_t)k->h.refcount_table_clusters * k->cs / 8;
	if (!k->h.refcount_table_clusters || k->rt_n * 8 > MAX_REFTABLE_BYTES ||
	    k->h.refcount_table_offset % k->cs)
		return -EIO;
	k->rmax = k->h.refcount_order == 6 ? UINT64_MAX : (1ULL << (1u << k->h.refcount_order)) - 1;
	return 0;
}

static int setup(struct ck *k)
{
	uint8_t *hdr = malloc(HEADER_READ), *rt = NULL;
	size_t hlen = k->flen < HEADER_READ ? k->flen : HEADER_READ;
	int rc = hdr ? 0 : -ENOMEM;

	if (!rc && hlen < QCOW2_HEADER_V2)
		rc = -EIO;
	if (!rc && !(rc = layer_pread(k->io, hdr, hlen, 0)))
		rc = check_header(k, hdr, hlen);
	free(hdr);
	if (rc)
		return rc;
	if (k->h.nb_snapshots && (rc = qcow2_snapshot_list(k->io, &k->snaps)))
		return rc;
	k->n = (k->flen + k->cs - 1) / k->cs;
	if (k->n > MAX_CLUSTERS)
		return -ENOTSUP;
	k->cap = k->n + 2;   /* a reference may end less than a cluster past the file */
	k->limit = k->rmax < UINT32_MAX ? k->rmax : UINT32_MAX;
	if (k->rmax <= UINT16_MAX)
		k->r16 = calloc(k->cap, sizeof(*k->r16));
	else
		k->r32 = calloc(k->cap, sizeof(*k->r32));
	k->l2 = malloc(k->cs);
	k->rb = malloc(k->cs);
	k->reftable = malloc(k->rt_n * 8);
	rt = malloc(k->rt_n * 8);
	if ((!k->r16 && !k->r32) || !k->l2 || !k->rb || !k->reftable || !rt)
		rc = -ENOMEM;
	if (!rc)
		rc = read_file(k, rt, k->rt_n * 8, k->h.refcount_table_offset);
	for (uint64_t i = 0; !rc && i < k->rt_n; i++)
		k->reftable[i] = qcow2_be64(rt + 8 * i);
	free(rt);
	return rc;
}

/* calculate_refcounts, compare_refcounts, check_oflag_copied. */
static int walk(struct ck *k)
{
	int rc = setup(k);

	if (rc)
		return rc;
	inc(k, 0, k->cs);
	if ((rc = check_l1(k, k->h.l1_offset, k->h.l1_size)) || (rc = check_snapshots(k)))
		return rc;
	inc(k, k->h.refcount_table_offset, k->rt_n * 8);
	check_refblocks(k);
	k->res->clusters = k->n;
	if ((rc = compare(k)))
		return rc;
	return run_copied(k);
}

static void release(struct ck *k)
{
	free(k->r16);
	free(k->r32);
	free(k->l2);
	free(k->rb);
	free(k->reftable);
	qcow2_snapshot_list_free(&k->snaps);
}

int qcow2_check_layer_refs(struct layer_io *io, struct qcow2_layer_check *res, uint32_t **refs,
			   uint64_t *n)
{
	struct ck k = { .io = io, .res = res, .flen = io->size };
	int rc;

	memset(res, 0, sizeof(*res));
	rc = walk(&k);
	if (!rc && refs) {
		*n = k.n;
		if (!(*refs = calloc(k.n + 1, sizeof(**refs))))
			rc = -ENOMEM;
		for (uint64_t c = 0; !rc && c < k.n; c++)
			(*refs)[c] = refs_get(&k, c);
	}
	release(&k);
	return rc;
}

int qcow2_check_layer(struct layer_io *io, struct qcow2_layer_check *res)
{
	return qcow2_check_layer_refs(io, res, NULL, NULL);
}
