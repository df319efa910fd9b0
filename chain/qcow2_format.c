/*
 * qcow2_format: header and extension decoding, with every field checked
 * against what the reader can handle. Reasons are short phrases that end
 * up in the log after the layer's name.
 */
#include "qcow2_format.h"

#include <string.h>

const char *qcow2_decode_header(const uint8_t *b, size_t len, struct qcow2_header *h)
{
	memset(h, 0, sizeof(*h));
	if (len < QCOW2_HEADER_V2 || memcmp(b, QCOW2_MAGIC_BYTES, 4))
		return "bad magic (not a qcow2 image)";
	h->version = qcow2_be32(b + 4);
	if (h->version != 2 && h->version != 3)
		return "unsupported qcow2 version";
	h->backing_offset = qcow2_be64(b + 8);
	h->backing_size = qcow2_be32(b + 16);
	h->cluster_bits = qcow2_be32(b + 20);
	h->size = qcow2_be64(b + 24);
	h->crypt_method = qcow2_be32(b + 32);
	h->l1_size = qcow2_be32(b + 36);
	h->l1_offset = qcow2_be64(b + 40);
	h->refcount_table_offset = qcow2_be64(b + 48);
	h->refcount_table_clusters = qcow2_be32(b + 56);
	h->nb_snapshots = qcow2_be32(b + 60);
	h->refcount_order = 4;
	h->header_length = QCOW2_HEADER_V2;
	if (h->version == 3) {
		if (len < 104)
			return "truncated header";
		h->incompat = qcow2_be64(b + 72);
		h->compat = qcow2_be64(b + 80);
		h->autoclear = qcow2_be64(b + 88);
		h->refcount_order = qcow2_be32(b + 96);
		h->header_length = qcow2_be32(b + 100);
		if (h->header_length < 104 || h->header_length % 8 || h->header_length > len)
			return "bad header length";
		if (h->header_length > 104)
			h->compression_type = b[104];
	}
	if (h->cluster_bits < 9 || h->cluster_bits > 21)
		return "unsupported cluster size";
	if (h->crypt_method)
		return "encrypted images are not supported";
	if (h->incompat & ~QCOW2_INCOMPAT_KNOWN)
		return "unknown incompatible feature";
	if (h->incompat & QCOW2_INCOMPAT_DATAFILE)
		return "external data files are not supported";
	if (h->incompat & QCOW2_INCOMPAT_EXTL2 && h->cluster_bits < 14)
		return "extended L2 entries with clusters under 16 KiB";
	if (h->refcount_order > 6)
		return "bad refcount order";
	if (h->compression_type > 1 || (h->compression_type && !(h->incompat & QCOW2_INCOMPAT_COMPRESS)))
		return "unknown compression type";
	if (h->size > (1ULL << 62))
		return "virtual size too large";
	if (h->backing_size > QCOW2_MAX_BACKING)
		return "backing file name too long";
	return NULL;
}

const char *qcow2_decode_extensions(const struct qcow2_header *h, const uint8_t *b, size_t len,
				    char *backing_fmt, size_t fmtlen)
{
	uint64_t off = h->header_length;

	backing_fmt[0] = 0;
	if (h->version < 3)
		off = QCOW2_HEADER_V2;
	while (off + 8 <= len) {
		uint32_t type = qcow2_be32(b + off), elen = qcow2_be32(b + off + 4);

		off += 8;
		if (type == QCOW2_EXT_END)
			return NULL;
		if (elen > len - off)
			return "header extension runs past the header cluster";
		if (type == QCOW2_EXT_BACKING_FMT) {
			if (elen == 0 || elen >= fmtlen)
				return "bad backing format extension";
			memcpy(backing_fmt, b + off, elen);
			backing_fmt[elen] = 0;
		} else if (type == QCOW2_EXT_DATA_FILE) {
			return "external data files are not supported";
		} else if (type == QCOW2_EXT_CRYPTO) {
			return "encrypted images are not supported";
		}
		off += (elen + 7ULL) & ~7ULL;
	}
	/* v2 images may have no end marker when there are no extensions. */
	return h->version < 3 ? NULL : "header extensions not terminated";
}

void qcow2_decode_compressed(uint64_t entry, uint32_t cluster_bits, uint64_t *off, uint64_t *len)
{
	unsigned x = 62 - (cluster_bits - 8);
	uint64_t sectors = ((entry >> x) & ((1ULL << (62 - x)) - 1)) + 1;

	*off = entry & ((1ULL << x) - 1);
	*len = sectors * 512 - (*off & 511);
}

uint64_t qcow2_refcount_entry_get(const uint8_t *block, uint64_t i, unsigned order)
{
	unsigned bits = 1u << order;
	uint64_t v = 0;

	if (bits >= 8) {
		for (unsigned k = 0; k < bits / 8; k++)
			v = v << 8 | block[i * (bits / 8) + k];
		return v;
	}
	return (block[i * bits / 8] >> ((i * bits) % 8)) & ((1u << bits) - 1);
}

void qcow2_refcount_entry_set(uint8_t *block, uint64_t i, unsigned order, uint64_t v)
{
	unsigned bits = 1u << order;

	if (bits >= 8) {
		for (int k = bits / 8 - 1; k >= 0; k--, v >>= 8)
			block[i * (bits / 8) + k] = v;
		return;
	}
	unsigned shift = (i * bits) % 8;
	uint8_t mask = ((1u << bits) - 1) << shift;

	block[i * bits / 8] = (block[i * bits / 8] & ~mask) | ((v << shift) & mask);
}
