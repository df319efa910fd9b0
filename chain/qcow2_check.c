/*
 * qcow2_check: see qcow2_check.h. Counts references to every host cluster
 * from the header, the L1 table, the refcount table and blocks, L2 tables
 * and data clusters, then compares them with the stored refcounts, as
 * qemu's check_refcounts_l1/l2, check_refblocks, compare_refcounts and
 * check_oflag_copied do (block/qcow2-refcount.c; rules re-derived from
 * docs/interop/qcow2.txt and qemu-img check's messages).
 */
#include "qcow2_check.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2_format.h"

#define OFLAG_COPIED       (1ULL << 63)
#define L1E_RESERVED       0x7f000000000001ffULL
#define L2E_STD_RESERVED   0x3f000000000001feULL
#define REFT_RESERVED      0x1ffULL
#define BITMAP_ALLOC       0xffffffffULL
#define MAX_CLUSTERS       (64ULL << 20)   /* 128 MiB of counters */

struct ck {
	struct layer_io *io;
	struct qcow2_layer_check *res;
	struct qcow2_header h;
	uint64_t cs, nclusters;    /* nclusters: clusters in the layer */
	uint16_t *refs;            /* references counted, saturating */
	uint8_t *buf;              /* one cluster */
};

static void corrupt(struct ck *k, const char *why)
{
	k->res->corruptions++;
	if (!k->res->first)
		k->res->first = why;
}

/* One reference to each cluster of [off, off + len). */
static void ref_range(struct ck *k, uint64_t off, uint64_t len)
{
	if (!len)
		return;
	if (off >= k->io->size || len > k->io->size - off) {
		corrupt(k, "a reference past the end of the layer");
		return;
	}
	for (uint64_t c = off / k->cs; c <= (off + len - 1) / k->cs; c++)
		if (k->refs[c] < UINT16_MAX)
			k->refs[c]++;
}

static int check_l2(struct ck *k, uint64_t l2off)
{
	bool ext = k->h.incompat & QCOW2_INCOMPAT_EXTL2;
	uint64_t es = ext ? 16 : 8;
	int rc = layer_pread(k->io, k->buf, k->cs, l2off);

	if (rc)
		return rc;
	for (uint64_t i = 0; i < k->cs / es; i++) {
		uint64_t e = qcow2_be64(k->buf + i * es), bm = ext ? qcow2_be64(k->buf + i * es + 8) : 0;
		uint64_t off = e & QCOW2_OFFSET_MASK;

		if (e & QCOW2_L2_COMPRESSED) {
			uint64_t coff, clen;

			if (e & OFLAG_COPIED)
				corrupt(k, "a compressed cluster with the COPIED flag");
			if (bm)
				corrupt(k, "a compressed cluster with a subcluster bitmap");
			qcow2_decode_compressed(e & ~OFLAG_COPIED, k->h.cluster_bits, &coff, &clen);
			ref_range(k, coff, clen);
			continue;
		}
		if (e & L2E_STD_RESERVED)
			corrupt(k, "an L2 entry with reserved bits set");
		if (!ext && (e & QCOW2_L2_ZERO) && k->h.version < 3)
			corrupt(k, "a zero flag in a version 2 image");
		if (!off) {
			if (ext && (bm & BITMAP_ALLOC))
				corrupt(k, "allocated subclusters without a host cluster");
			continue;
		}
		if ((bm >> 32) & bm)
			corrupt(k, "subclusters both allocated and zero");
		if (off % k->cs) {
			corrupt(k, "a misaligned data cluster");
			continue;
		}
		ref_range(k, off, k->cs);
	}
	return 0;
}

/* The stored refcount of every cluster (0 where no block covers it); calls
 * fn for each. Refcount-table problems are corruptions. */
typedef void (*refcount_fn)(struct ck *k, uint64_t cluster, uint64_t refcount);

static int walk_refcounts(struct ck *k, const uint8_t *reftable, uint64_t entries, refcount_fn fn)
{
	uint64_t per_block = k->cs * 8 >> k->h.refcount_order;

	for (uint64_t b = 0; b < entries && b * per_block < k->nclusters; b++) {
		uint64_t e = qcow2_be64(reftable + 8 * b), off = e & ~REFT_RESERVED;
		int rc;

		if (!off)
			continue;
		if (off >= k->io->size || off % k->cs || k->cs > k->io->size - off)
			continue;    /* counted as a corruption when referenced */
		if ((rc = layer_pread(k->io, k->buf, k->cs, off)))
			return rc;
		for (uint64_t i = 0; i < per_block && b * per_block + i < k->nclusters; i++)
			fn(k, b * per_block + i, qcow2_refcount_entry_get(k->buf, i, k->h.refcount_order));
	}
	return 0;
}

static void compare(struct ck *k, uint64_t c, uint64_t refcount)
{
	if (refcount < k->refs[c])
		corrupt(k, "a cluster referenced more often than its refcount");
	else if (refcount > k->refs[c])
		k->res->leaks++;
	k->refs[c] = 0;     /* compared: what is left had no refcount at all */
}

/* Refcount 1 <=> COPIED, for L2 tables and data clusters (check_oflag_copied). */
static void store_refcount(struct ck *k, uint64_t c, uint64_t refcount)
{
	k->refs[c] = refcount > UINT16_MAX ? UINT16_MAX : refcount;
}

static void copied_agrees(struct ck *k, uint64_t entry)
{
	uint64_t c = (entry & QCOW2_OFFSET_MASK) / k->cs;

	if (c < k->nclusters && (k->refs[c] == 1) != !!(entry & OFLAG_COPIED))
		corrupt(k, "a COPIED flag that disagrees with the refcount");
}

static int check_copied(struct ck *k, const uint8_t *l1)
{
	bool ext = k->h.incompat & QCOW2_INCOMPAT_EXTL2;
	uint64_t es = ext ? 16 : 8;

	for (uint32_t i = 0; i < k->h.l1_size; i++) {
		uint64_t e = qcow2_be64(l1 + 8 * i), l2off = e & QCOW2_OFFSET_MASK;
		int rc;

		if (!l2off || l2off % k->cs || l2off >= k->io->size || k->cs > k->io->size - l2off)
			continue;
		copied_agrees(k, e);
		if ((rc = layer_pread(k->io, k->buf, k->cs, l2off)))
			return rc;
		for (uint64_t j = 0; j < k->cs / es; j++) {
			uint64_t l2e = qcow2_be64(k->buf + j * es);

			if (!(l2e & QCOW2_L2_COMPRESSED) && (l2e & QCOW2_OFFSET_MASK) &&
			    !((l2e & QCOW2_OFFSET_MASK) % k->cs))
				copied_agrees(k, l2e);
		}
	}
	return 0;
}

static int check_tables(struct ck *k, uint8_t **l1, uint8_t **reftable, uint64_t *rt_entries)
{
	uint64_t l1_bytes = (uint64_t)k->h.l1_size * 8;
	int rc;

	*rt_entries = (uint64_t)k->h.refcount_table_clusters * k->cs / 8;
	if (k->h.nb_snapshots)
		return -ENOTSUP;   /* their tables are not counted here */
	if (l1_bytes > (32ULL << 20) || *rt_entries * 8 > (32ULL << 20) ||
	    k->h.l1_offset % k->cs || k->h.refcount_table_offset % k->cs ||
	    k->h.l1_offset > k->io->size || l1_bytes > k->io->size - k->h.l1_offset ||
	    k->h.refcount_table_offset > k->io->size ||
	    *rt_entries * 8 > k->io->size - k->h.refcount_table_offset)
		return -EIO;
	*l1 = malloc(l1_bytes + 1);
	*reftable = malloc(*rt_entries * 8 + 1);
	if (!*l1 || !*reftable)
		return -ENOMEM;
	if ((rc = layer_pread(k->io, *l1, l1_bytes, k->h.l1_offset)) ||
	    (rc = layer_pread(k->io, *reftable, *rt_entries * 8, k->h.refcount_table_offset)))
		return rc;
	ref_range(k, 0, k->cs);
	ref_range(k, k->h.l1_offset, l1_bytes);
	ref_range(k, k->h.refcount_table_offset, *rt_entries * 8);
	for (uint64_t b = 0; b < *rt_entries; b++) {
		uint64_t e = qcow2_be64(*reftable + 8 * b), off = e & ~REFT_RESERVED;

		if (e & REFT_RESERVED)
			corrupt(k, "a refcount table entry with reserved bits set");
		if (off && off % k->cs)
			corrupt(k, "a misaligned refcount block");
		else if (off)
			ref_range(k, off, k->cs);
	}
	for (uint32_t i = 0; i < k->h.l1_size; i++) {
		uint64_t e = qcow2_be64(*l1 + 8 * i), l2off = e & QCOW2_OFFSET_MASK;

		/* A flag without an offset reads as unallocated, but qemu-img check
		 * takes the entry for an L2 table in the header cluster: refuse it too. */
		if (!e)
			continue;
		if (e & L1E_RESERVED)
			corrupt(k, "an L1 entry with reserved bits set");
		if (l2off % k->cs) {
			corrupt(k, "a misaligned L2 table");
			continue;
		}
		ref_range(k, l2off, k->cs);
		if (l2off < k->io->size && k->cs <= k->io->size - l2off && (rc = check_l2(k, l2off)))
			return rc;
	}
	return 0;
}

int qcow2_check_layer(struct layer_io *io, struct qcow2_layer_check *res)
{
	struct ck k = { .io = io, .res = res };
	uint8_t hdr[4096], *l1 = NULL, *reftable = NULL;
	uint64_t rt_entries = 0;
	const char *why;
	int rc;

	size_t hlen = io->size < sizeof(hdr) ? io->size : sizeof(hdr);

	memset(res, 0, sizeof(*res));
	if (hlen < QCOW2_HEADER_V2)
		return -EIO;
	if ((rc = layer_pread(io, hdr, hlen, 0)))
		return rc;
	if ((why = qcow2_decode_header(hdr, hlen, &k.h)))
		return -EIO;
	k.cs = 1ULL << k.h.cluster_bits;
	k.nclusters = (io->size + k.cs - 1) / k.cs;
	if (k.nclusters > MAX_CLUSTERS)
		return -ENOTSUP;
	k.refs = calloc(k.nclusters + 1, sizeof(*k.refs));
	k.buf = malloc(k.cs);
	rc = k.refs && k.buf ? check_tables(&k, &l1, &reftable, &rt_entries) : -ENOMEM;
	if (!rc)
		rc = walk_refcounts(&k, reftable, rt_entries, compare);
	for (uint64_t c = 0; !rc && c < k.nclusters; c++)
		if (k.refs[c]) /* referenced, but no refcount block covers it */
			corrupt(&k, "a cluster referenced more often than its refcount");
	if (!rc)
		rc = walk_refcounts(&k, reftable, rt_entries, store_refcount);
	if (!rc)
		rc = check_copied(&k, l1);
	free(k.refs);
	free(k.buf);
	free(l1);
	free(reftable);
	return rc;
}
