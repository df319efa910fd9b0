/*
 * qcow2_refcount: the metadata engine under qcow2_snapshot (internal to
 * chain/). One struct qmeta holds an image opened for metadata changes:
 * header fields, the active L1 table, the refcount table with its blocks
 * loaded on demand (changes are kept in memory until qmeta_commit_refs),
 * and the snapshot table. Allocation is first fit from the start of the
 * image, as qemu's, so freed clusters are reused.
 */
#ifndef VSTORFS_QCOW2_REFCOUNT_H
#define VSTORFS_QCOW2_REFCOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include "layer_io.h"
#include "qcow2_format.h"
#include "qcow2_snapshot.h"

#define QCOW2_OFLAG_COPIED (1ULL << 63)
#define QCOW2_HDR_L1_SIZE      36
#define QCOW2_HDR_REFTABLE     48
#define QCOW2_HDR_NB_SNAPSHOTS 60

struct qmeta {
	struct layer_io *io;
	unsigned flags;
	struct qcow2_header h;
	uint64_t cs;
	unsigned cb;
	bool extended;
	uint64_t l2e_size, l2_entries;
	uint64_t *l1;                 /* active L1, h.l1_size entries (flags included) */
	uint64_t rt_off;
	uint32_t rt_clusters;
	uint64_t rt_n, *rt;           /* refcount table entries */
	uint8_t **rb;                 /* refcount blocks by table index, loaded on demand */
	bool *rb_dirty;
	uint64_t rb_cap;              /* entries of rb/rb_dirty */
	bool rt_dirty;                /* entries changed (in place, or a moved table) */
	uint64_t old_rt_off;          /* table replaced by a bigger one: freed after the switch */
	uint32_t old_rt_clusters;
	uint64_t rpb;                 /* refcounts per block */
	unsigned order;
	uint64_t rmax;                /* largest refcount value */
	uint64_t nclusters;           /* clusters of the layer (io->size rounded up) */
	uint64_t hint;                /* first cluster that may be free */
	struct qcow2_snapshot_list snaps;
	char why[160];
};

/* Open io for metadata work. Refuses (-ENOTSUP) what qcow2_snapshot.h lists. */
int qmeta_open(struct layer_io *io, unsigned flags, struct qmeta **out);
void qmeta_close(struct qmeta *m);
/* Log reason (once per call) and return err. */
int qmeta_fail(struct qmeta *m, int err, const char *why);

int qmeta_rc_get(struct qmeta *m, uint64_t cluster, uint64_t *v);
/* One past the last cluster that may have a refcount (refcount blocks may describe clusters past the end). */
uint64_t qmeta_rc_end(const struct qmeta *m);
/* Add delta; -ERANGE past rmax or below 0, -EIO when the block is missing for a non-zero result. */
int qmeta_rc_add(struct qmeta *m, uint64_t cluster, int64_t delta);
/* Allocate n contiguous clusters (refcount 1, in memory): host offset in *off. */
int qmeta_alloc(struct qmeta *m, uint64_t n, uint64_t *off);
/* Free n clusters at off (refcount -1 each, in memory). */
int qmeta_free(struct qmeta *m, uint64_t off, uint64_t bytes);
/*
 * Make the in-memory refcounts durable: changed blocks (new ones first
 * unreferenced), flush, then the table entries or a moved table and the
 * header switch, flush, then the old table freed (flushed).
 */
int qmeta_commit_refs(struct qmeta *m);

/* Read/write one L2 table (a cluster). */
int qmeta_read_table(struct qmeta *m, uint64_t off, uint8_t *buf);
/* Write the active L1 table (all of it), flushed. */
int qmeta_write_l1(struct qmeta *m);

/*
 * References of every cluster into refs[m->nclusters] (caller frees), with
 * structural problems counted in r->errors. Compares with the refcounts
 * and active COPIED flags when r is given (errors, leaks, copied_errors).
 */
int qmeta_count_refs(struct qmeta *m, uint32_t **refs, struct qcow2_check_result *r);

/*
 * Call fn for every reference the L1 table `l1` (n entries) holds: its L2
 * tables (kind 1), data clusters (2), compressed clusters (3, one call per
 * cluster the compressed range touches). Structural problems are -EIO.
 */
typedef int (*qmeta_ref_fn)(struct qmeta *m, void *opaque, uint64_t cluster, int kind);
int qmeta_walk_l1(struct qmeta *m, const uint64_t *l1, uint64_t n, qmeta_ref_fn fn, void *opaque);

/* Snapshot table: parse from the image (into m->snaps), serialise as qemu 7.2. */
int qsnap_parse(struct layer_io *io, const struct qcow2_header *h, uint64_t table_off,
		struct qcow2_snapshot_list *out);
uint64_t qsnap_table_size(const struct qcow2_snapshot_list *l);
void qsnap_serialise(const struct qcow2_snapshot_list *l, uint8_t *buf);

void qmeta_put64(uint8_t *p, uint64_t v);
void qmeta_put32(uint8_t *p, uint32_t v);

#endif
