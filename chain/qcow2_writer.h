/*
 * qcow2_writer: in-place writes into one existing qcow2 layer, for merging
 * snapshots (commit into the snapshot layer, rebase into the child).
 *
 * The writer works in allocation units: a subcluster with extended L2
 * entries, a cluster otherwise. Callers hand it whole units. Where a
 * cluster must be materialised beyond the units written (a standard
 * cluster that was unallocated, zero or compressed), the writer asks the
 * caller's fill() for those bytes: fill() returns what the layer's view
 * reads there now, so materialising changes no byte anybody reads.
 *
 * Write ordering (qemu's rules), per batch of units:
 * (1) new clusters get their refcount and their data (and new L2 tables
 *     their zeroed contents) while nothing points at them; flush;
 * (2) L2 entries (and extended-L2 bitmaps) are switched to the new data;
 *     flush;
 * (3) L1 entries are pointed at new L2 tables; flush;
 * (4) clusters no longer referenced (replaced compressed clusters) get
 *     their refcount dropped; flush.
 * A crash between steps can leak clusters but never lets metadata point
 * at unwritten or free space, and never changes what the layer reads for
 * ranges outside the units being written.
 */
#ifndef VSTORFS_QCOW2_WRITER_H
#define VSTORFS_QCOW2_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "layer_io.h"

struct qcow2_writer;

typedef int (*qcow2_fill_fn)(void *opaque, void *buf, uint64_t len, uint64_t guest_off);

/* Open io (a qcow2 layer, writable). -ENOTSUP for images this writer refuses to change,
 * -EIO for images that break qemu-img check's rules (qcow2_check.h; leaks are fine). */
int qcow2_writer_open(struct layer_io *io, qcow2_fill_fn fill, void *fill_opaque,
		      struct qcow2_writer **out);
void qcow2_writer_close(struct qcow2_writer *w);

uint64_t qcow2_writer_unit(const struct qcow2_writer *w);
uint64_t qcow2_writer_vsize(const struct qcow2_writer *w);

/* Units in [off, off + len) whose writing needs no new host cluster. */
bool qcow2_writer_unit_preallocated(struct qcow2_writer *w, uint64_t off);

/*
 * Host bytes for data clusters and L2 tables a later write of `len` bytes of
 * units at `off` may need beyond what the image has. The caller sums these
 * over the whole merge, then adds qcow2_writer_refcount_need() of the sum
 * once, and checks the total against qcow2_writer_room().
 */
int qcow2_writer_need(struct qcow2_writer *w, uint64_t off, uint64_t len, uint64_t *bytes);
uint64_t qcow2_writer_refcount_need(const struct qcow2_writer *w, uint64_t bytes);
/* Bytes between the current end of the image and the end of its layer. */
uint64_t qcow2_writer_room(const struct qcow2_writer *w);
/*
 * Bytes the layer lacks to hold every cluster its refcounts use: a file
 * qemu left ending inside its last cluster (it writes only the subclusters
 * it needs). A merge needs them before it writes anything (merge_*_need
 * count them): the writer reads and writes whole clusters.
 */
uint64_t qcow2_writer_tail(const struct qcow2_writer *w);
/* Bytes past the image end its refcount table can describe (the writer never grows
 * the table: a merge needing more fails with -ENOSPC, so check before writing). */
uint64_t qcow2_writer_table_room(const struct qcow2_writer *w);
uint64_t qcow2_writer_cluster_size(const struct qcow2_writer *w);
/* The host offset of the cluster holding guest offset `off` when a write there goes
 * in place (into a host cluster the entry owns, e.g. preallocated), else 0. A file
 * may hold a hole there: the write then takes room from the filesystem. */
uint64_t qcow2_writer_in_place_host(struct qcow2_writer *w, uint64_t off);

/* Queue whole units [off, off + len) with their data; written by qcow2_writer_commit. */
int qcow2_writer_write(struct qcow2_writer *w, uint64_t off, const void *buf, uint64_t len);
/* Write everything queued, in the order above. */
int qcow2_writer_commit(struct qcow2_writer *w);

/*
 * Point the image at a new backing layer (NULL: none). The new string is
 * written to free space in the header cluster and flushed first; then one
 * sector-sized write switches offset and length together.
 */
int qcow2_writer_set_backing(struct qcow2_writer *w, const char *backing);

#endif
