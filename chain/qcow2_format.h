/*
 * qcow2_format: the on-disk layout of qcow2 (qemu's docs/interop/qcow2.txt),
 * decoded in one place. Everything here is pure: bytes in, fields out.
 */
#ifndef VSTORFS_QCOW2_FORMAT_H
#define VSTORFS_QCOW2_FORMAT_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QCOW2_MAGIC_BYTES "QFI\xfb"
#define QCOW2_HEADER_V2 72
#define QCOW2_MAX_BACKING 1023

#define QCOW2_INCOMPAT_DIRTY    (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT  (1ULL << 1)
#define QCOW2_INCOMPAT_DATAFILE (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESS (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2    (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN    0x1fULL

#define QCOW2_EXT_END          0x00000000u
#define QCOW2_EXT_BACKING_FMT  0xe2792acau
#define QCOW2_EXT_FEATURES     0x6803f857u
#define QCOW2_EXT_DATA_FILE    0x44415441u
#define QCOW2_EXT_CRYPTO       0x0537be77u

#define QCOW2_L2_COMPRESSED (1ULL << 62)
#define QCOW2_L2_ZERO       1ULL
#define QCOW2_OFFSET_MASK   0x00fffffffffffe00ULL

struct qcow2_header {
	uint32_t version;
	uint64_t backing_offset;
	uint32_t backing_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t incompat, compat, autoclear;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;   /* 0 zlib, 1 zstd */
};

/* One load and a byte swap: a merge's walk over a 64 GiB layer decodes
 * millions of L2 entries, and gcc 12 keeps a byte loop as a loop. */
static inline uint64_t qcow2_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

static inline uint32_t qcow2_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Decode the fixed header from the first `len` bytes. NULL or a reason it is not qcow2 we can read. */
const char *qcow2_decode_header(const uint8_t *buf, size_t len, struct qcow2_header *h);

/* Walk extensions in buf (cluster 0 prefix). Fills backing_fmt (NUL-terminated) if present.
 * Returns NULL or the reason the image is refused. */
const char *qcow2_decode_extensions(const struct qcow2_header *h, const uint8_t *buf, size_t len,
				    char *backing_fmt, size_t fmtlen);

/*
 * Entry i of a refcount block, each 1 << order bits wide: big-endian for 8
 * bits and more; narrower ones fill each byte from its least significant
 * bit, as qemu's get_refcount_ro0..2 read them.
 */
uint64_t qcow2_refcount_entry_get(const uint8_t *block, uint64_t i, unsigned order);
void qcow2_refcount_entry_set(uint8_t *block, uint64_t i, unsigned order, uint64_t v);

/* A compressed L2 entry's host byte range. */
void qcow2_decode_compressed(uint64_t entry, uint32_t cluster_bits, uint64_t *off, uint64_t *len);

#endif
