/*
 * dir_overlay: the overlay Proxmox creates on a storage configured
 * "preallocation off": the same image as chain/qcow2_create.c writes
 * (qcow2 v3, extended L2, 128 KiB clusters, backing string + format) but
 * with nothing preallocated, laid out as qemu-img lays it out: header
 * cluster, refcount table, one refcount block, the L1 table (all zero), and
 * the file ending right after the L1 entries. Metadata first, flushed, then
 * the header, flushed: until the header lands the file is not this image.
 */
#include "dir/dir_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chain/qcow2_create.h"

#define CL        (1ULL << QCOW2_OVERLAY_CLUSTER_BITS)
#define L2_SPAN   (CL / 16 * CL)          /* guest bytes one extended L2 table maps */
#define HDR_LEN   112

static void be32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint8_t *ext(uint8_t *p, uint32_t type, const void *data, uint32_t len)
{
	be32(p, type);
	be32(p + 4, len);
	memcpy(p + 8, data, len);
	return p + 8 + ((len + 7) & ~7u);
}

uint64_t dir_overlay_sparse_size(uint64_t vsize)
{
	uint64_t l1 = (vsize + L2_SPAN - 1) / L2_SPAN;

	if (!vsize || l1 == 0 || l1 * 8 > CL)   /* one L1 cluster: up to 16 TiB */
		return 0;
	return 3 * CL + l1 * 8;
}

int dir_overlay_create_sparse(struct layer_io *io, uint64_t vsize, const char *backing,
			      const char *backing_format)
{
	uint64_t size = dir_overlay_sparse_size(vsize), l1 = (vsize + L2_SPAN - 1) / L2_SPAN;
	size_t blen = strlen(backing), flen = strlen(backing_format);
	uint8_t *buf, *p;
	int rc;

	if (!size || blen == 0 || blen > 1023 || flen == 0 || flen > 16)
		return -EINVAL;
	if (io->size < size)
		return -ENOSPC;
	buf = calloc(1, CL);
	if (!buf)
		return -ENOMEM;
	be64(buf, 2 * CL);                                   /* refcount table: one block */
	rc = layer_pwrite(io, buf, CL, CL);
	memset(buf, 0, CL);
	for (int c = 0; c < 4; c++)                          /* header, table, block, L1 */
		buf[2 * c + 1] = 1;
	if (!rc)
		rc = layer_pwrite(io, buf, CL, 2 * CL);
	memset(buf, 0, CL);
	if (!rc)
		rc = layer_pwrite(io, buf, l1 * 8, 3 * CL);
	if (!rc)
		rc = layer_flush(io);
	if (!rc) {
		memcpy(buf, "QFI\xfb", 4);
		be32(buf + 4, 3);
		be32(buf + 16, (uint32_t)blen);
		be32(buf + 20, QCOW2_OVERLAY_CLUSTER_BITS);
		be64(buf + 24, vsize);
		be32(buf + 36, (uint32_t)l1);
		be64(buf + 40, 3 * CL);
		be64(buf + 48, CL);
		be32(buf + 56, 1);
		be64(buf + 72, 1ULL << 4);                   /* extended L2 entries */
		be32(buf + 96, 4);                           /* 16-bit refcounts */
		be32(buf + 100, HDR_LEN);
		p = ext(buf + HDR_LEN, 0xe2792acau, backing_format, (uint32_t)flen);
		p = ext(p, 0, "", 0);
		be64(buf + 8, (uint64_t)(p - buf));
		memcpy(p, backing, blen);
		rc = layer_pwrite(io, buf, 512, 0);
	}
	if (!rc)
		rc = layer_flush(io);
	free(buf);
	return rc;
}
