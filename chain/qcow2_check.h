/*
 * qcow2_check: `qemu-img check` (no repair) for one qcow2 layer, the one
 * walker behind every consistency check in vstorfs: the merge writer's gate
 * (qcow2_writer_open), qcow2_check/qcow2_reclaim for internal snapshots
 * (qcow2_snapshot.h), `qcow2cat --check` and the fuzz targets' oracles.
 *
 * It counts what qemu 7.2's qcow2_check_refcounts counts, in its order
 * (block/qcow2-refcount.c: calculate_refcounts, check_refcounts_l1/l2,
 * check_refblocks, compare_refcounts, check_oflag_copied):
 *   - a reference (header, L1/L2 tables, data and compressed clusters, the
 *     snapshot table and L1s, the refcount table and blocks) counts one on
 *     every cluster it touches, unless it runs a whole cluster or more past
 *     the end of the file: that is a corruption and counts nothing. A file
 *     may end inside its last cluster (qemu writes only the subclusters it
 *     needs); the clusters compared are the file's, rounded up;
 *   - a counted reference that would pass the image's largest refcount
 *     (1 with refcount_bits=1) is a corruption;
 *   - reserved bits, misaligned tables and data clusters, inconsistent
 *     extended-L2 bitmaps, a compressed entry with COPIED or a bitmap, a
 *     refcount block outside the file or referenced more than once, a v3
 *     snapshot entry with less than 16 bytes of extra data;
 *   - stored refcount below the references: a corruption; above: a leak;
 *   - an active L1/L2 COPIED flag that disagrees with refcount == 1: a
 *     corruption (counted in `copied` too);
 *   - a refcount block that cannot be read (misaligned): a check error for
 *     every cluster it covers (qemu's "check-errors").
 * Tables are read as qemu reads the file: zeros past its end.
 *
 * `unreadable` counts what qemu accepts and chain/ does not read (a zero
 * flag in a version 2 image); it is no qemu error, but the writer refuses.
 */
#ifndef VSTORFS_QCOW2_CHECK_H
#define VSTORFS_QCOW2_CHECK_H

#include <stdint.h>

#include "layer_io.h"

struct qcow2_layer_check {
	uint64_t corruptions;   /* qemu-img check's "corruptions" (COPIED ones included) */
	uint64_t copied;        /* of those, COPIED flags disagreeing with the refcount */
	uint64_t leaks;         /* qemu-img check's "leaks" */
	uint64_t check_errors;  /* qemu-img check's "check-errors" */
	uint64_t unreadable;    /* accepted by qemu, refused by chain/ (not in corruptions) */
	uint64_t clusters;      /* clusters compared (the file's, rounded up) */
	char first[160];        /* the first problem found, or "" */
};

/*
 * 0 with *res filled, or a negative errno: -EIO when the header cannot be
 * decoded or the snapshot table not parsed (qemu-img check cannot open such
 * an image either), -ENOMEM, -ENOTSUP for what is not counted here
 * (encryption, external data files, persistent bitmaps, files of more than
 * 64 Mi clusters).
 */
int qcow2_check_layer(struct layer_io *io, struct qcow2_layer_check *res);

/*
 * The same, and the references counted per cluster: *refs (caller frees)
 * holds *n entries, at least res->clusters.
 */
int qcow2_check_layer_refs(struct layer_io *io, struct qcow2_layer_check *res, uint32_t **refs,
			   uint64_t *n);

#endif
