/*
 * read_path: open, read, lseek and release of the tree's files. disk.raw
 * and part<N>.raw read through a view reader; the JSON files serve the
 * text they had at open.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/copy_reply.h"
#include "fs/extent_cache.h"
#include "fs/handles.h"
#include "fs/options.h"
#include "fs/ops_parts.h"
#include "fs/partition_cache.h"
#include "fs/readahead_window.h"
#include "fs/tree.h"
#include "store/slice_reader.h"

/* An open disk.raw. The reader is swapped for the newest one of the same
 * view when the catalog changes, so a handle survives snapshot operations
 * on its volume. */
struct handle {
	struct fs_node *node;
	pthread_mutex_t lock;
	struct view_reader *reader; /* lock; disk.raw and part<N>.raw */
	uint64_t generation;        /* lock */
	struct blob *text;          /* the JSON files: their text as of open */
};

static int view_reader_of(struct fs_node *n, struct view_reader **out)
{
	struct view_reader *disk;
	struct partition p;
	struct target t;
	int rc = fs_resolve(n, &t);

	/* fs_resolve() answers ESTALE when the name now stands for other bytes (a
	 * snapshot retaken, a layer replaced): an open handle keeps the reader
	 * it has, whole, and never new bytes under an inode whose page cache
	 * holds old ones. */
	if (rc)
		return rc;
	rc = fs_store_view_reader(t.st, t.vol, t.view, &disk);
	if (rc == 0 && n->kind == FS_NODE_PART) {
		rc = fs_find_partition(&t, &p);
		if (rc == 0)
			rc = slice_reader_new(disk, p.start, p.length, out);
		view_reader_put(disk);
	} else if (rc == 0) {
		*out = disk;
	}
	fs_target_release(&t);
	return rc;
}

/* The reader a request should use; a reference for the caller. */
static struct view_reader *handle_reader(struct handle *h)
{
	uint64_t gen = fs_catalog_generation();
	struct view_reader *r, *fresh;

	pthread_mutex_lock(&h->lock);
	if (h->generation != gen && view_reader_of(h->node, &fresh) == 0) {
		view_reader_put(h->reader);
		h->reader = fresh;
	}
	h->generation = gen;
	r = h->reader;
	view_reader_get(r);
	pthread_mutex_unlock(&h->lock);
	return r;
}

static void handle_free(void *p)
{
	struct handle *h = p;

	view_reader_put(h->reader);
	blob_put(h->text);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_node *n = fs_inode_find(ino);
	struct handle *h;
	struct target t;
	int rc;

	if (!n)
		return (void)fuse_reply_err(req, ENOENT);
	if ((rc = fs_resolve(n, &t)))
		return (void)fuse_reply_err(req, -rc);
	fs_readahead_window_set(fs_tree_opts->mountpoint, fs_tree_opts->readahead_kb);
	fi->keep_cache = t.view && t.view->snapshot;
	if (!fs_kind(n->kind)->file || (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fs_target_release(&t);
		return (void)fuse_reply_err(req, fs_kind(n->kind)->file ? EROFS : EISDIR);
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		fs_target_release(&t);
		return (void)fuse_reply_err(req, ENOMEM);
	}
	h->node = n;
	h->generation = fs_catalog_generation();
	if (fs_kind(n->kind)->text) {
		rc = fs_extents_json(t.st, t.vol, t.view, t.older, &h->text);
		/* About current the answer may change by the next stat: serve this
		 * text whole, whatever size the kernel last saw. */
		fi->direct_io = !t.view->snapshot;
	} else {
		rc = view_reader_of(n, &h->reader);
		/* current keeps no page cache past an open, so by default its reads
		 * skip it: each read(2) is one request answered straight into the
		 * reader's buffer, no copy through pages and no readahead guessing
		 * (bench/README.md, "Reply modes"). The price is MAP_SHARED (ENODEV:
		 * libfuse 3.14 cannot ask for FUSE_DIRECT_IO_ALLOW_MMAP), hence
		 * current_io=cache. A network store wants it either way. */
		if (rc == 0 && !t.view->snapshot && (!fs_tree_opts->current_cached || h->reader->prefer_direct))
			fi->direct_io = 1;
		/* Read before its listing was rescanned (catalog.c, resync): the
		 * attributes this open remembers, and the next stat, are the
		 * rescanned listing's. */
		if (rc == 0 && n->kind == FS_NODE_FILE && !h->reader->broken &&
		    h->reader->size != t.view->size) {
			struct target now;

			fs_catalog_resync(t.st, t.view, h->reader->size);
			if (fs_resolve(n, &now) == 0) {
				fs_target_release(&t);
				t = now;
			}
		}
	}
	if (rc == 0)
		fs_remember_attr(n, &t);
	fs_target_release(&t);
	if (rc) {
		free(h);
		return (void)fuse_reply_err(req, -rc);
	}
	pthread_mutex_init(&h->lock, NULL);
	fi->fh = handle_add(h, handle_free);
	if (!fi->fh) {
		handle_free(h);
		return (void)fuse_reply_err(req, ENOMEM);
	}
	fuse_reply_open(req, fi);
}

/*
 * A read libfuse can splice is answered with a vector of buffers, one per
 * run of the view's extent map: runs that sit as plain bytes in a file
 * descriptor are handed to libfuse as (fd, offset) pairs to be spliced,
 * zero runs point at a shared page of zeros, and only the rest (compressed
 * clusters) is produced into memory. A reply must never be short before
 * EOF, so when the vector is full the rest is read into one buffer. Every
 * other read (small, longer than libfuse's pipe, of a store with no map) is
 * read into the thread's buffer and copied out (fs/copy_reply.h).
 */
#define READ_MAX_BUFS 64

static char zeros[1 << 20]; /* never written: every zero run of a reply points here */

struct read_reply {
	struct fuse_bufvec *v;
	void *owned[READ_MAX_BUFS];
	int nowned;
};

static struct fuse_buf *next_buf(struct read_reply *r)
{
	struct fuse_buf *b = &r->v->buf[r->v->count++];

	memset(b, 0, sizeof(*b));
	return b;
}

static int add_copy(struct read_reply *r, struct view_reader *vr, uint64_t pos, uint64_t len)
{
	struct fuse_buf *b;
	void *p = malloc(len);
	ssize_t n;

	if (!p)
		return -ENOMEM;
	r->owned[r->nowned++] = p;
	n = vr->ops->read(vr, p, len, pos);
	if (n < 0)
		return n;
	if ((uint64_t)n != len)
		return -EIO;
	b = next_buf(r);
	b->mem = p;
	b->size = len;
	return 0;
}

static int add_extent(struct read_reply *r, struct view_reader *vr, uint64_t pos,
		      const struct view_extent *e, uint64_t *used)
{
	struct fuse_buf *b;

	if (e->kind == VIEW_EXT_ZERO) {
		b = next_buf(r);
		b->mem = zeros;
		b->size = *used = e->len < sizeof(zeros) ? e->len : sizeof(zeros);
		return 0;
	}
	if (e->kind == VIEW_EXT_FD) {
		b = next_buf(r);
		b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
		b->fd = e->fd;
		b->pos = e->fd_off;
		b->size = *used = e->len;
		return 0;
	}
	*used = e->len;
	return add_copy(r, vr, pos, e->len);
}

static int build_reply(struct read_reply *r, struct view_reader *vr, uint64_t off, uint64_t len)
{
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		struct view_extent e;
		uint64_t used;
		int rc;

		if (r->v->count >= READ_MAX_BUFS - 1 || r->nowned >= READ_MAX_BUFS - 1)
			return add_copy(r, vr, pos, end - pos);
		rc = vr->ops->map(vr, pos, end - pos, &e);
		if (rc < 0)
			return rc;
		if (e.len > end - pos)
			e.len = end - pos;
		rc = add_extent(r, vr, pos, &e, &used);
		if (rc < 0)
			return rc;
		pos += used;
	}
	return 0;
}

/*
 * A small read is cheaper copied than spliced: pread + writev, where a
 * spliced reply costs a vmsplice and two splices through a pipe.
 */
#define SMALL_READ (32u << 10)

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	struct handle *h = handle_get(fi->fh);
	struct view_reader *vr;
	uint64_t vsize, len;
	struct read_reply r = { 0 };
	int rc = 0;

	(void)ino;
	if (!h)
		return (void)fuse_reply_err(req, EBADF);
	if (h->text) {
		if (off >= 0 && (uint64_t)off < h->text->len)
			fuse_reply_buf(req, h->text->text + off,
				       size < h->text->len - off ? size : h->text->len - off);
		else
			fuse_reply_buf(req, NULL, 0);
		return (void)handle_put(fi->fh);
	}
	vr = handle_reader(h);
	handle_put(fi->fh);
	vsize = vr->size;
	if (off < 0 || (uint64_t)off >= vsize) {
		view_reader_put(vr);
		return (void)fuse_reply_buf(req, NULL, 0);
	}
	len = vsize - off < size ? vsize - off : size;
	if (len <= SMALL_READ || !vr->ops->map || len > copy_reply_splice_max(READ_MAX_BUFS)) {
		rc = copy_reply(req, vr, off, len);
		if (rc)
			fuse_reply_err(req, -rc);
		view_reader_put(vr);
		return;
	}
	r.v = calloc(1, sizeof(*r.v) + READ_MAX_BUFS * sizeof(struct fuse_buf));
	if (!r.v)
		rc = -ENOMEM;
	if (!rc)
		rc = build_reply(&r, vr, off, len);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_data(req, r.v, FUSE_BUF_SPLICE_MOVE);
	view_reader_put(vr);
	for (int i = 0; i < r.nowned; i++)
		free(r.owned[i]);
	free(r.v);
}

/* SEEK_DATA/SEEK_HOLE: holes are runs that read as zeros with nothing
 * behind them (unallocated everywhere, zero clusters, past a short backing
 * layer), so sparse-aware copies skip them. */
static int seek_data_hole(struct view_reader *vr, off_t off, int whence, off_t *out)
{
	uint64_t size = vr->size, pos = off;

	if (off < 0 || pos >= size)
		return -ENXIO;
	if (!vr->ops->map) {
		*out = whence == SEEK_DATA ? off : (off_t)size;
		return 0;
	}
	while (pos < size) {
		struct view_extent e;
		int rc = vr->ops->map(vr, pos, size - pos, &e);

		if (rc < 0)
			return rc;
		if ((e.kind == VIEW_EXT_ZERO) == (whence == SEEK_HOLE)) {
			*out = pos;
			return 0;
		}
		pos += e.len;
	}
	if (whence == SEEK_DATA)
		return -ENXIO;
	*out = size;
	return 0;
}

void fs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		 struct fuse_file_info *fi)
{
	struct handle *h;
	struct view_reader *vr;
	off_t res;
	int rc;

	(void)ino;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return (void)fuse_reply_err(req, EINVAL);
	if (!(h = handle_get(fi->fh)))
		return (void)fuse_reply_err(req, EBADF);
	if (h->text) {
		res = whence == SEEK_DATA ? off : (off_t)h->text->len;
		rc = off < 0 || (uint64_t)off >= h->text->len ? -ENXIO : 0;
		handle_put(fi->fh);
		return rc ? (void)fuse_reply_err(req, -rc) : (void)fuse_reply_lseek(req, res);
	}
	vr = handle_reader(h);
	handle_put(fi->fh);
	rc = seek_data_hole(vr, off, whence, &res);
	view_reader_put(vr);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	fuse_reply_lseek(req, res);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_close(fi->fh);
	fuse_reply_err(req, 0);
}
