/*
 * chain: a stack of layers (qcow2 overlays over qcow2 or raw) read as one
 * flat virtual disk. This is the whole public surface of chain/ for the
 * read side; fs/ uses nothing else.
 *
 * Error convention: functions return 0 / a count, or a negative errno.
 * Corrupt or hostile metadata is -EIO for the read that touches it, with one
 * log line per (layer, reason) naming the layer, never a crash.
 */
#ifndef VSTORFS_CHAIN_H
#define VSTORFS_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "layer_io.h"

/* A volume store resolves backing strings to layers. */
struct chain_store {
	/*
	 * Open the layer that `backing` (the backing string stored in layer
	 * `from`) names. 0 and *out on success; -ENOENT when no such layer
	 * exists; -EACCES when the string names something outside the store
	 * (a path outside the VG), which chain/ refuses and logs.
	 */
	int (*open_backing)(const struct chain_store *st, struct layer_io *from,
			    const char *backing, struct layer_io **out);
	void *opaque;
	/* What the store is called in log lines ("volume group", "directory");
	 * NULL: "store". A string literal: broken layers keep pointing at it. */
	const char *kind;
};

/* AUTO: qcow2 if the layer starts with the qcow2 magic, else raw. */
enum chain_layer_format { CHAIN_FMT_AUTO, CHAIN_FMT_RAW, CHAIN_FMT_QCOW2, CHAIN_FMT_BAD };

/* What one layer's header says, without opening a chain (cheap: one or two preads). */
struct chain_probe {
	enum chain_layer_format format;
	uint64_t virtual_size;  /* qcow2: header size; raw: io->size */
	char *backing;          /* malloc'd backing string, NULL if none */
	char *backing_format;   /* malloc'd, NULL if the header has no such extension */
	char error[160];        /* why format == CHAIN_FMT_BAD */
};

/*
 * Probe io. A layer is qcow2 if it starts with the qcow2 magic, else raw.
 * Returns 0 (probe->format may still be CHAIN_FMT_BAD with error set) or a
 * negative errno for I/O failure. Free with chain_probe_release().
 */
int chain_probe_layer(struct layer_io *io, struct chain_probe *probe);
void chain_probe_release(struct chain_probe *probe);

struct chain;

/*
 * Open the chain whose top layer is `top` (ownership of top passes to the
 * chain, also on failure). `top_format` is what the caller expects the top
 * to be (a ".qcow2" LV must be qcow2: CHAIN_FMT_QCOW2; a bad magic then
 * makes it a broken layer, not raw). A backing layer's format comes from
 * its parent's backing-format extension, else AUTO. Backing layers come from `store` and are owned by
 * the chain. A broken layer (bad header, loop, missing backing layer,
 * refused feature) does not fail the open: the chain is cut there, the
 * layer is logged once, and reads that need it return -EIO. If the top
 * layer itself is broken, the chain's size is top->size and every read is
 * -EIO. `label` prefixes log lines ("pve/vm-100-disk-0.qcow2@s1").
 * Returns 0 or -ENOMEM.
 */
int chain_open(struct layer_io *top, enum chain_layer_format top_format,
	       const struct chain_store *store,
	       const char *label, struct chain **out);

/*
 * The same chain, but its top layer (qcow2) read at its internal snapshot
 * named `snapshot` (the first with that name, as qemu-img picks): the
 * snapshot's L1 table and disk size (never the VM state stored past it),
 * over the backing chain the image names now, as qemu reads it with
 * `qemu-img convert -l snapshot.name=`. Returns 0; -ENOENT when the top
 * layer has no such snapshot (or is raw); -EIO when its snapshot table or
 * the snapshot's L1 table is unusable (logged); -ENOMEM. *out is NULL on
 * failure; ownership of top passes to the chain as for chain_open.
 * See qcow2_snapshot.h for listing, creating and deleting snapshots.
 */
int chain_open_snapshot(struct layer_io *top, enum chain_layer_format top_format,
			const struct chain_store *store, const char *snapshot, const char *label,
			struct chain **out);

/* Chains are shared between open file handles: get/put, last put closes. */
void chain_get(struct chain *c);
void chain_put(struct chain *c);

uint64_t chain_size(const struct chain *c);  /* virtual size of the view */
int chain_depth(const struct chain *c);      /* layers opened, including broken ones */
bool chain_is_broken(const struct chain *c); /* some layer could not be opened */

/*
 * Read len bytes at off into buf. Bytes at or past chain_size() are not
 * read: returns the number of bytes stored (short only at the end), or a
 * negative errno (-EIO for corruption or a broken layer).
 */
ssize_t chain_read(struct chain *c, void *buf, size_t len, uint64_t off);

enum chain_extent_kind {
	CHAIN_EXT_ZERO,   /* reads as zeros (zero cluster, unallocated everywhere, past a short backing layer) */
	CHAIN_EXT_DATA,   /* plain bytes at io/host_off, contiguous for len bytes */
	CHAIN_EXT_COPY,   /* bytes exist but must be produced by chain_read (compressed) */
};

struct chain_extent {
	enum chain_extent_kind kind;
	uint64_t len;          /* bytes covered from off, > 0 */
	struct layer_io *io;   /* DATA: the layer holding the bytes */
	uint64_t host_off;     /* DATA: offset inside io */
	int depth;             /* layer that answered (0 = top), -1 when nothing did */
};

/*
 * Describe the longest run starting at off (off < chain_size) of one kind,
 * at most len bytes, merging adjacent clusters whose host offsets are
 * contiguous in the same layer. Used for zero-copy replies and SEEK_DATA.
 * Returns 0 or a negative errno (-EIO as chain_read).
 */
int chain_map(struct chain *c, uint64_t off, uint64_t len, struct chain_extent *ext);

/*
 * The run at `off` (at most `len`) over which the top layer alone either
 * answers every byte (data, zeros, compressed: *own = true) or none of them.
 * Looks at no other layer, so walking a view's own data costs one pass over
 * the top layer's metadata. Errors as chain_map.
 */
int chain_map_top(struct chain *c, uint64_t off, uint64_t len, uint64_t *run, bool *own);

/*
 * Memory bound: all open images share one metadata cache (L2 tables,
 * refcounts later) of at most this many bytes. Default 32 MiB.
 */
void chain_set_cache_limit(size_t bytes);

#endif
