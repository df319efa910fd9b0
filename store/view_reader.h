/*
 * view_reader: one view of a volume opened for reading, as a store hands it
 * to fs/. The LVM and directory stores build it over a qcow2 chain
 * (store/chain_reader.c); the RBD store over a librbd image.
 *
 * Contract for implementations:
 *  - read() fills exactly len bytes at off (off + len <= size) or returns a
 *    negative errno (-EIO for a damaged layer, logged once by the store).
 *  - map() describes the run at off (< size), at most len bytes, of one
 *    kind. ZERO runs read as zeros and hold nothing (holes for SEEK_HOLE);
 *    FD runs are plain bytes at (fd, fd_off) that the reply path may splice;
 *    READ runs hold data that only read() can produce.
 *  - changed() lists, sorted and disjoint, the ranges of this view whose
 *    bytes may differ from `older` (another view of the same volume, opened
 *    by the same store), each with exists=false when the range now reads as
 *    zeros. With older == NULL: the ranges holding anything but
 *    never-written zeros. Never a false negative; computed from metadata.
 *    NULL when the store cannot tell (fs/ then offers no such files).
 *  - All calls may come from several threads at once. Readers are
 *    reference counted; the last view_reader_put frees it.
 */
#ifndef VSTORFS_VIEW_READER_H
#define VSTORFS_VIEW_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum view_extent_kind { VIEW_EXT_ZERO, VIEW_EXT_FD, VIEW_EXT_READ };

struct view_extent {
	enum view_extent_kind kind;
	uint64_t len;       /* > 0 */
	int fd;             /* FD: where the bytes are */
	uint64_t fd_off;
};

/* Called once per range, in order; a nonzero return stops the walk and is returned. */
typedef int (*view_range_fn)(void *arg, uint64_t off, uint64_t len, bool exists);

struct view_reader;

struct view_reader_ops {
	ssize_t (*read)(struct view_reader *r, void *buf, size_t len, uint64_t off);
	int (*map)(struct view_reader *r, uint64_t off, uint64_t len, struct view_extent *e);
	int (*changed)(struct view_reader *r, struct view_reader *older, view_range_fn fn, void *arg);
	void (*free)(struct view_reader *r);
};

struct view_reader {
	const struct view_reader_ops *ops;
	uint64_t size;      /* virtual size */
	int refs;           /* atomic; 1 when a store hands it out */
	/* Uncached reads serve readers best (a network store's live image: the
	 * kernel's small readahead requests would each wait a round trip), so
	 * fs/ opens it direct_io: the reader's own request size reaches us. */
	bool prefer_direct;
	/* Reads see what is written to the volume after the open (librbd keeps
	 * its metadata current). A chain reader caches L1/L2 tables, so a live
	 * view without this is opened anew by fs/ for each open(2): a VM's
	 * writes since the last open are never read through stale tables. */
	bool follows_writes;
	/* A layer could not be opened (logged once, when opened): every read
	 * fails. fs/ keeps such a reader instead of opening it, and logging
	 * the same fault, again for each open(2). */
	bool broken;
	/* st_blocks of the whole view counts the ranges changed(r, NULL)
	 * reports existing (what the platform's own tool calls allocated: `rbd
	 * diff`), not map()'s data runs (which may be coarser: RBD's object
	 * map), when the listing leaves `used` 0. */
	bool used_is_allocated;
};

static inline void view_reader_get(struct view_reader *r)
{
	__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
}

static inline void view_reader_put(struct view_reader *r)
{
	if (r && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
		r->ops->free(r);
}

#endif
