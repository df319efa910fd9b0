/*
 * qcow2_image: one opened qcow2 layer, read side. Validates the header and
 * tables at open, then answers "what is at this guest offset" for runs of
 * clusters (subclusters with extended L2 entries).
 */
#ifndef VSTORFS_QCOW2_IMAGE_H
#define VSTORFS_QCOW2_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "layer_io.h"
#include "qcow2_format.h"

struct qcow2_image;

enum qcow2_run_kind { QCOW2_UNALLOCATED, QCOW2_ZERO, QCOW2_DATA, QCOW2_COMPRESSED };

struct qcow2_run {
	enum qcow2_run_kind kind;
	uint64_t len;    /* bytes from the asked offset */
	uint64_t host;   /* DATA: host offset of the first byte; COMPRESSED: of the compressed bytes */
};

/* Open: NULL on success with *out set; else the reason (static string) and *out NULL. */
const char *qcow2_image_open(struct layer_io *io, const char *label, struct qcow2_image **out);
/* The same checks without loading the L1 table nor warning about dirty
 * images: for probes. map/read_compressed on such an image return -EIO. */
const char *qcow2_image_open_header(struct layer_io *io, const char *label, struct qcow2_image **out);
void qcow2_image_close(struct qcow2_image *img);

/*
 * Read through another L1 table from now on (an internal snapshot's, see
 * qcow2_snapshot.h), with `size` as the virtual size. L1 entries the size
 * needs past l1_size read as unallocated, as qemu reads them. Call before
 * the first map. NULL on success, else the reason (nothing changed).
 */
const char *qcow2_image_use_l1(struct qcow2_image *img, uint64_t l1_offset, uint32_t l1_size,
			       uint64_t size);

uint64_t qcow2_image_size(const struct qcow2_image *img);
const char *qcow2_image_backing(const struct qcow2_image *img);     /* NULL if none */
const char *qcow2_image_backing_fmt(const struct qcow2_image *img); /* "" if not stated */
uint64_t qcow2_image_l2_span(const struct qcow2_image *img);        /* guest bytes one cached L2 slice maps (a power of two); runs end at its multiples */

/* The active L1 table as loaded (the entries the virtual size reaches), NULL before tables are loaded. */
const uint64_t *qcow2_image_l1(const struct qcow2_image *img, uint32_t *entries);

/* The run at off (< size), at most len bytes. 0 or -EIO (logged once per reason). */
int qcow2_image_map(struct qcow2_image *img, uint64_t off, uint64_t len, struct qcow2_run *run);

/* Bytes [off, off+len) of a compressed cluster (the range lies in one cluster). */
int qcow2_image_read_compressed(struct qcow2_image *img, uint64_t off, void *buf, uint64_t len);

#endif
