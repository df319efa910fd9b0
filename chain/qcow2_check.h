/*
 * qcow2_check: the consistency rules of `qemu-img check` (no repair), for
 * one qcow2 layer. The merge writer refuses to change an image that breaks
 * them, and the writer's fuzz target holds every image it wrote to them.
 *
 * Counted like qemu: a corruption is anything qemu-img check reports as an
 * error (a cluster referenced more often than its refcount says, a table or
 * data cluster that is misaligned or past the end of the layer, reserved
 * bits, inconsistent extended-L2 bitmaps, a COPIED flag that disagrees with
 * the refcount); a leak is a cluster whose refcount exceeds its references.
 * Also a corruption here: a zero flag in a version 2 image, which qemu (and
 * chain/) refuses to read.
 */
#ifndef VSTORFS_QCOW2_CHECK_H
#define VSTORFS_QCOW2_CHECK_H

#include <stdint.h>

#include "layer_io.h"

struct qcow2_layer_check {
	uint64_t corruptions;
	uint64_t leaks;
	const char *first;   /* the first corruption found (static string), or NULL */
};

/* 0 with *res filled, or a negative errno: -EIO when the header or a table
 * cannot be read at all, -ENOMEM, -ENOTSUP for images past the bounds below. */
int qcow2_check_layer(struct layer_io *io, struct qcow2_layer_check *res);

#endif
