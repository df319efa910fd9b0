/*
 * qcow2_create: see qcow2_create.h. The layout is qemu's for
 * preallocation=metadata: header, refcount table, refcount blocks, L1
 * table, L2 tables, then one host cluster per guest cluster. The sizes of
 * each part follow qemu's measure arithmetic so the image ends exactly at
 * qcow2_overlay_size().
 */
#include "qcow2_create.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define CLUSTER        (1ULL << QCOW2_OVERLAY_CLUSTER_BITS)
#define L2E_SIZE       16                      /* extended L2 entry */
#define L2_ENTRIES     (CLUSTER / L2E_SIZE)
#define REFCOUNT_ORDER 4                       /* 16-bit refcounts */
#define REFS_PER_BLOCK (CLUSTER * 8 / (1 << REFCOUNT_ORDER))
#define OFLAG_COPIED   (1ULL << 63)
#define INCOMPAT_EXTL2 (1ULL << 4)
#define HEADER_LENGTH  112

struct overlay_layout {
	uint64_t data_clusters;   /* guest clusters, each with a host cluster */
	uint64_t l2_tables;
	uint64_t l1_entries;      /* = l2_tables */
	uint64_t l1_clusters;
	uint64_t refblocks;
	uint64_t reftable_clusters;
	uint64_t total_clusters;
	/* host offsets */
	uint64_t reftable_off, refblock_off, l1_off, l2_off, data_off;
};

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* qemu's fixed point: refcount metadata must also count itself. */
static void refcount_fixed_point(uint64_t clusters, uint64_t *blocks, uint64_t *table)
{
	uint64_t n = 0, last;

	*blocks = *table = 0;
	do {
		last = n;
		*blocks = div_up(clusters + *table + *blocks, REFS_PER_BLOCK);
		*table = div_up(*blocks, CLUSTER / 8);
		n = clusters + *blocks + *table;
	} while (n != last);
}

static int layout(uint64_t vsize, struct overlay_layout *l)
{
	uint64_t meta;

	if (vsize == 0 || vsize > (1ULL << 50))
		return -EINVAL;
	memset(l, 0, sizeof(*l));
	l->data_clusters = div_up(vsize, CLUSTER);
	l->l2_tables = div_up(l->data_clusters, L2_ENTRIES);
	l->l1_entries = l->l2_tables;
	l->l1_clusters = div_up(l->l1_entries * 8, CLUSTER);
	meta = 1 + l->l2_tables + l->l1_clusters;
	refcount_fixed_point(meta + l->data_clusters, &l->refblocks, &l->reftable_clusters);
	l->total_clusters = meta + l->data_clusters + l->refblocks + l->reftable_clusters;
	l->reftable_off = CLUSTER;
	l->refblock_off = l->reftable_off + l->reftable_clusters * CLUSTER;
	l->l1_off = l->refblock_off + l->refblocks * CLUSTER;
	l->l2_off = l->l1_off + l->l1_clusters * CLUSTER;
	l->data_off = l->l2_off + l->l2_tables * CLUSTER;
	return 0;
}

uint64_t qcow2_overlay_size(uint64_t vsize)
{
	struct overlay_layout l;

	return layout(vsize, &l) ? 0 : l.total_clusters * CLUSTER;
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (24 - 8 * i);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (56 - 8 * i);
}

/* One metadata region: cluster-sized buffer reused, filled by `fill`. */
typedef void (*fill_fn)(const struct overlay_layout *l, uint64_t index, uint8_t *buf);

static void fill_reftable(const struct overlay_layout *l, uint64_t c, uint8_t *buf)
{
	uint64_t first = c * (CLUSTER / 8);

	for (uint64_t i = 0; i < CLUSTER / 8 && first + i < l->refblocks; i++)
		put_be64(buf + 8 * i, l->refblock_off + (first + i) * CLUSTER);
}

static void fill_refblock(const struct overlay_layout *l, uint64_t b, uint8_t *buf)
{
	uint64_t first = b * REFS_PER_BLOCK;

	for (uint64_t i = 0; i < REFS_PER_BLOCK && first + i < l->total_clusters; i++)
		put_be16(buf + 2 * i, 1);
}

static void fill_l1(const struct overlay_layout *l, uint64_t c, uint8_t *buf)
{
	uint64_t first = c * (CLUSTER / 8);

	for (uint64_t i = 0; i < CLUSTER / 8 && first + i < l->l1_entries; i++)
		put_be64(buf + 8 * i, (l->l2_off + (first + i) * CLUSTER) | OFLAG_COPIED);
}

static void fill_l2(const struct overlay_layout *l, uint64_t t, uint8_t *buf)
{
	uint64_t first = t * L2_ENTRIES;

	/* Host cluster present, bitmap all clear: allocated space, no data yet. */
	for (uint64_t i = 0; i < L2_ENTRIES && first + i < l->data_clusters; i++)
		put_be64(buf + L2E_SIZE * i, (l->data_off + (first + i) * CLUSTER) | OFLAG_COPIED);
}

static int write_region(struct layer_io *io, const struct overlay_layout *l, uint8_t *buf,
			uint64_t off, uint64_t count, fill_fn fill)
{
	for (uint64_t i = 0; i < count; i++) {
		int rc;

		memset(buf, 0, CLUSTER);
		fill(l, i, buf);
		rc = layer_pwrite(io, buf, CLUSTER, off + i * CLUSTER);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static uint8_t *put_ext(uint8_t *p, uint32_t type, const void *data, uint32_t len)
{
	put_be32(p, type);
	put_be32(p + 4, len);
	memcpy(p + 8, data, len);
	return p + 8 + ((len + 7) & ~7u);
}

static uint8_t *put_feature_table(uint8_t *p)
{
	static const struct { uint8_t type, bit; const char *name; } f[] = {
		{ 0, 0, "dirty bit" }, { 0, 1, "corrupt bit" }, { 0, 2, "external data file" },
		{ 0, 3, "compression type" }, { 0, 4, "extended L2 entries" },
		{ 1, 0, "lazy refcounts" }, { 2, 0, "bitmaps" }, { 2, 1, "raw external data" },
	};
	uint8_t table[sizeof(f) / sizeof(f[0]) * 48] = { 0 };

	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		table[48 * i] = f[i].type;
		table[48 * i + 1] = f[i].bit;
		strncpy((char *)table + 48 * i + 2, f[i].name, 46);
	}
	return put_ext(p, 0x6803f857, table, sizeof(table));
}

static int fill_header(const struct overlay_layout *l, uint64_t vsize, const char *backing,
		       const char *backing_format, uint8_t *buf)
{
	size_t blen = strlen(backing), flen = strlen(backing_format);
	uint8_t *p;

	if (blen == 0 || blen > 1023 || flen == 0 || flen > 16)
		return -EINVAL;
	memcpy(buf, "QFI\xfb", 4);
	put_be32(buf + 4, 3);
	put_be32(buf + 16, blen);
	put_be32(buf + 20, QCOW2_OVERLAY_CLUSTER_BITS);
	put_be64(buf + 24, vsize);
	put_be32(buf + 36, l->l1_entries);
	put_be64(buf + 40, l->l1_off);
	put_be64(buf + 48, l->reftable_off);
	put_be32(buf + 56, l->reftable_clusters);
	put_be64(buf + 72, INCOMPAT_EXTL2);
	put_be32(buf + 96, REFCOUNT_ORDER);
	put_be32(buf + 100, HEADER_LENGTH);
	/* byte 104: compression type zlib (0) */
	p = put_ext(buf + HEADER_LENGTH, 0xe2792aca, backing_format, flen);
	p = put_feature_table(p);
	p = put_ext(p, 0, "", 0);
	put_be64(buf + 8, p - buf);
	memcpy(p, backing, blen);
	return 0;
}

int qcow2_overlay_create(struct layer_io *io, uint64_t vsize, const char *backing,
			 const char *backing_format)
{
	struct overlay_layout l;
	uint8_t *buf;
	int rc = layout(vsize, &l);

	if (rc)
		return rc;
	if (io->size < l.total_clusters * CLUSTER)
		return -ENOSPC;
	buf = malloc(CLUSTER);
	if (!buf)
		return -ENOMEM;
	rc = write_region(io, &l, buf, l.reftable_off, l.reftable_clusters, fill_reftable);
	if (!rc)
		rc = write_region(io, &l, buf, l.refblock_off, l.refblocks, fill_refblock);
	if (!rc)
		rc = write_region(io, &l, buf, l.l1_off, l.l1_clusters, fill_l1);
	if (!rc)
		rc = write_region(io, &l, buf, l.l2_off, l.l2_tables, fill_l2);
	if (!rc)
		rc = layer_flush(io);
	if (!rc) {
		memset(buf, 0, CLUSTER);
		rc = fill_header(&l, vsize, backing, backing_format, buf);
	}
	if (!rc)
		rc = layer_pwrite(io, buf, CLUSTER, 0);
	if (!rc)
		rc = layer_flush(io);
	free(buf);
	return rc;
}
