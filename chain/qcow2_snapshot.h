/*
 * qcow2_snapshot: internal snapshots of one qcow2 layer (the snapshot table
 * of qemu's docs/interop/qcow2.rst), as `qemu-img snapshot` and libvirt /
 * Proxmox directory storages make them: list, create, delete, plus a
 * refcount checker and a leak reclaimer for recovery after a crash.
 * Reading a view at a snapshot is chain_open_snapshot() (chain.h).
 *
 * All functions take the layer itself; create/delete/reclaim need a
 * writable layer_io and an image nobody else has open (a stopped VM, as
 * qemu-img requires). Nothing here is thread-safe against other writers.
 *
 * Error convention: 0 or a negative errno; the reason is logged once,
 * naming the layer. Hostile metadata is -EIO, never a crash:
 *   -ENOENT  no snapshot of that name
 *   -EINVAL  bad name (empty, longer than 255 bytes, contains NUL)
 *   -ENOTSUP images these functions refuse to change or check: dirty or
 *            corrupt flag set, persistent bitmaps, external data file,
 *            encryption, refcount width of 1 bit
 *   -EIO     corrupt metadata (the checker's structural errors), I/O errors
 *   -EFBIG   65536 snapshots already, or the table would pass 64 MiB
 *   -ERANGE  a refcount would overflow its width
 *   -ENOSPC  the layer cannot hold the new clusters (and may not grow)
 */
#ifndef VSTORFS_QCOW2_SNAPSHOT_H
#define VSTORFS_QCOW2_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "layer_io.h"

#define QCOW2_SNAPSHOT_MAX        65536
#define QCOW2_SNAPSHOT_NAME_MAX   255       /* what qemu keeps of a name */
#define QCOW2_SNAPSHOT_NO_ICOUNT  UINT64_MAX

/* One snapshot table entry, decoded. */
struct qcow2_snapshot_info {
	char *id;                 /* unique id string ("1", "2", ...) */
	char *name;               /* tag; names need not be unique */
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;   /* 64-bit extra field when present, else the 32-bit one */
	uint64_t disk_size;       /* extra data when present, else the header's size (512-rounded down) */
	uint64_t icount;          /* QCOW2_SNAPSHOT_NO_ICOUNT when the entry has none */
	uint64_t l1_offset;
	uint32_t l1_size;         /* entries */
	uint32_t extra_data_size; /* as stored */
	uint8_t *unknown_extra;   /* extra data past the 24 bytes qemu knows, kept on rewrite */
};

struct qcow2_snapshot_list {
	unsigned n;
	struct qcow2_snapshot_info *s;
	uint64_t table_offset, table_size;  /* bytes the table occupies */
	char error[160];                    /* why qcow2_snapshot_list failed */
};

/*
 * Parse the snapshot table of qcow2 layer io. Validates everything the
 * table says: count (<= 65536), table offset (cluster-aligned, past the
 * header cluster, inside the layer), every entry inside the layer and the
 * whole table at most 64 MiB, extra data at most 1024 bytes, no NUL inside
 * ids or names, unique ids. Snapshot L1 tables are checked by the users
 * (chain_open_snapshot, delete, check). Free with qcow2_snapshot_list_free
 * (also after a failure).
 */
int qcow2_snapshot_list(struct layer_io *io, struct qcow2_snapshot_list *out);
void qcow2_snapshot_list_free(struct qcow2_snapshot_list *l);
/* Index of the first snapshot named `name`, or -1 (qemu-img -d/-l pick the first too). */
int qcow2_snapshot_find(const struct qcow2_snapshot_list *l, const char *name);

/* The layer may grow: writes past io->size extend it (files). Else allocation stops at io->size. */
#define QCOW2_SNAP_GROW 1u

/*
 * `qemu-img snapshot -c NAME` on a closed image: a new entry with id = one
 * more than the largest numeric id, date now (microseconds, as qemu-img),
 * vm clock 0, vm_state_size 0, icount 0, 24 bytes of extra data
 * (vm_state_size_large, disk_size, icount); the active L1 table copied to
 * new clusters; refcounts raised for everything it reaches; COPIED cleared
 * in the active L1 and L2 entries. Other entries are rewritten as qemu
 * 7.2 rewrites them (extra data widened to 24 bytes, unknown extra kept).
 *
 * The image is first checked (qcow2_check): structural errors refuse
 * with -EIO before anything is written, as does a refcount that would
 * overflow (-ERANGE). Steps, each flushed before the next, with a crash
 * point after each ("snapshot-create:<step>"):
 *   refcounts  new clusters for the L1 copy (and the table) and +1 for
 *              everything the active L1 reaches (L2 tables, data and
 *              compressed clusters, preallocated ones of extended L2 too)
 *   l1-copy    the active L1 copied, flags and all (as qemu copies it)
 *   l2-flags   COPIED cleared in the active L2 tables
 *   l1-flags   ... and in the active L1 table
 *   table      the new snapshot table in new clusters
 *   header     nb_snapshots + table offset switched in one 12-byte write
 *   done       the old table's clusters freed
 * A crash at any step leaks at most and reads the same in every view.
 * Between "refcounts" and "l1-flags" qemu-img check also reports
 * OFLAG_COPIED errors for entries still flagged whose refcount is 2, the
 * second reference being the leak (qemu's own snapshot -c has the same
 * window; no order avoids it, as a refcount and its COPIED flag live in
 * different clusters). qcow2_reclaim() repairs every such state.
 */
int qcow2_snapshot_create(struct layer_io *io, const char *name, unsigned flags);

/*
 * `qemu-img snapshot -d NAME` (the first snapshot so named), checked first
 * like create. Steps and crash points ("snapshot-delete:<step>"):
 *   table     a new table without the entry, in new clusters
 *   header    nb_snapshots + table offset switched (the snapshot is gone)
 *   l2-flags  COPIED set in the active L2 entries whose refcount will be 1
 *   l1-flags  ... and in the active L1 entries
 *   done      refcounts of everything the snapshot's L1 reached dropped,
 *             its L1 clusters and the old table freed
 * qemu drops the refcounts first and sets COPIED after; setting COPIED
 * first means a crash in between leaves COPIED on clusters whose second
 * reference is a leak (safe to write in place), which `qemu-img check -r
 * leaks` alone repairs, where qemu's order needs `-r all`. qemu also
 * rewrites COPIED in the deleted snapshot's L2 tables shared with other
 * snapshots; that flag means nothing outside the active tables, so they
 * are left alone here.
 */
int qcow2_snapshot_delete(struct layer_io *io, const char *name, unsigned flags);

struct qcow2_check_result {
	uint64_t errors;         /* structural: refcount below references, bad offsets, bad entries, bad tables */
	uint64_t copied_errors;  /* active L1/L2 COPIED flag disagreeing with refcount == 1 (qemu counts them as corruptions) */
	uint64_t leaks;          /* clusters whose refcount exceeds their references */
	uint64_t leaked_clusters_freed;  /* qcow2_reclaim: refcounts lowered */
	uint64_t copied_fixed;           /* qcow2_reclaim: COPIED flags rewritten */
	uint64_t clusters;       /* clusters in the layer */
	char first_error[160];
};

/*
 * Recompute every reference (header, refcount table and blocks, active L1
 * and every snapshot's L1, their L2 tables, data and compressed clusters,
 * the snapshot table) and compare with the stored refcounts and the
 * active COPIED flags, as `qemu-img check` does. Read-only. Returns 0
 * (counts in *r, which may report errors), or -errno when the image
 * cannot be checked at all (then r->errors is at least 1 unless -ENOTSUP
 * or -ENOMEM).
 */
int qcow2_check(struct layer_io *io, struct qcow2_check_result *r);

/*
 * `qemu-img check -r leaks`, plus COPIED repair: every refcount above its
 * references is lowered to them (flushed), then active COPIED flags are
 * set exactly where the refcount is 1 (flushed). Refuses (-EIO, nothing
 * written) an image with structural errors. Safe on a closed image after a
 * crash of create/delete/merge: it never lowers a refcount below what is
 * referenced. *r describes the image before the repair.
 */
int qcow2_reclaim(struct layer_io *io, unsigned flags, struct qcow2_check_result *r);

/* One past the last cluster with a non-zero refcount, in bytes: the file can be cut
 * there without losing anything the image references. */
int qcow2_image_end(struct layer_io *io, uint64_t *end);

#endif
