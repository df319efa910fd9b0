/*
 * ops: the FUSE low-level operations of the read-only tree
 * MOUNT/<store>/<volume>/<view>/disk.raw.
 *
 * Every file's stat follows one contract (store/store.h, fill_attr below):
 * st_blocks counts the bytes its data occupies, the times of anything
 * under current are the time of the stat, those of a snapshot when it was
 * taken, to the nanosecond. Partition files live in <view>/.partitions,
 * which readdir leaves out (partitions=visible lists it), so a walk of
 * the tree reads each byte of a view once.
 *
 * Every operation replies exactly once; helpers return 0 or a negative
 * errno and never reply. A node is resolved against the newest published
 * catalog on every call, so the tree follows VG changes without remounts.
 */
#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "fs/catalog.h"
#include "fs/copy_reply.h"
#include "fs/data_bytes.h"
#include "fs/extent_cache.h"
#include "fs/partition_cache.h"
#include "store/slice_reader.h"
#include "fs/handles.h"
#include "fs/options.h"

#define DISK_FILE "disk.raw"
#define ALLOCATED_FILE "allocated.json"
#define CHANGED_DIR "changed-since"
#define PARTS_DIR ".partitions"
#define JSON_SUFFIX ".json"

static const struct fs_options *opts;
static time_t mount_time;

/* What a node names in the current catalog; holds a reference on st. */
struct target {
	struct fs_node *node;
	struct fs_store *st;
	const struct store_volume *vol;
	const struct store_view *view;
	const struct store_view *older; /* CHANGED: the view it compares with */
	int part;                       /* PART: the partition number */
};

/* Views of a volume are current first, then snapshots oldest first: the
 * views older than v are the snapshots before it (every one for current). */
static bool is_older(const struct store_volume *vol, const struct store_view *older,
		     const struct store_view *v)
{
	int o = older - vol->views, i = v - vol->views;

	return o >= 1 && (i == 0 || o < i);
}

/* "s1.json" in changed-since/ -> the view s1, if it is older than t->view. */
static const struct store_view *older_view(const struct target *t, const char *name)
{
	size_t n = strlen(name), m = strlen(JSON_SUFFIX);
	const struct store_view *o;
	char *base;

	if (n <= m || strcmp(name + n - m, JSON_SUFFIX) || !(base = strndup(name, n - m)))
		return NULL;
	o = store_volume_find_view(t->vol, base);
	free(base);
	return o && is_older(t->vol, o, t->view) ? o : NULL;
}

/* "part3.raw" -> 3; 0 when the name is not a partition file's. */
static int part_number(const char *name)
{
	int n = 0, len = 0;

	if (sscanf(name, "part%d.raw%n", &n, &len) != 1 || name[len] || n <= 0 || name[4] < '1' || name[4] > '9')
		return 0;
	return n;
}

/* The partition table of t's view (t: the view or anything below it). */
static int view_partitions(const struct target *t, struct partition_table *pt)
{
	struct fs_node *view = t->node, *disk;

	while (view && view->kind != FS_NODE_VIEW)
		view = view->parent;
	disk = view ? fs_inode_child(view, FS_NODE_FILE, DISK_FILE, NULL) : NULL;
	if (!disk)
		return -ENOMEM;
	return fs_partitions(t->st->store->name, t->vol->name, t->view, disk->ino, pt);
}

/* The partition t->part of t->view, into *p. */
static int find_partition(const struct target *t, struct partition *p)
{
	struct partition_table pt;
	int rc = view_partitions(t, &pt);

	if (rc < 0)
		return rc;
	rc = -ENOENT;
	for (int i = 0; i < pt.n; i++) {
		if (pt.parts[i].number == t->part) {
			*p = pt.parts[i];
			rc = 0;
		}
	}
	partitions_release(&pt);
	return rc;
}

static void target_release(struct target *t)
{
	fs_store_put(t->st);
	t->st = NULL;
}

static int resolve(struct fs_node *n, struct target *t)
{
	struct fs_node *path[6];
	int depth = 0;

	memset(t, 0, sizeof(*t));
	t->node = n;
	for (struct fs_node *p = n; p && p->kind != FS_NODE_ROOT; p = p->parent)
		path[depth++] = p;
	for (int i = depth - 1; i >= 0; i--) {
		struct fs_node *p = path[i];

		switch (p->kind) {
		case FS_NODE_STORE:
			t->st = fs_catalog_get_store(p->name);
			if (!t->st)
				return -ENOENT;
			break;
		case FS_NODE_VOLUME:
			t->vol = store_listing_find(t->st->listing, p->name);
			if (!t->vol)
				goto gone;
			break;
		case FS_NODE_VIEW:
			t->view = store_volume_find_view(t->vol, p->name);
			if (!t->view)
				goto gone;
			/* Same name, other bytes (a snapshot deleted and taken again;
			 * merges keep idents): the old inode is gone. ESTALE makes the
			 * kernel look the path up again (and find the new inode), and
			 * an open handle keep the reader of the bytes it had. */
			if (strcmp(t->view->ident, p->ident)) {
				target_release(t);
				return -ESTALE;
			}
			break;
		case FS_NODE_CHANGED:
			t->older = older_view(t, p->name);
			if (!t->older || strcmp(t->older->ident, p->ident))
				goto gone;
			break;
		case FS_NODE_PART:
			t->part = part_number(p->name);
			break;
		default:
			break;
		}
	}
	return 0;
gone:
	target_release(t);
	return -ENOENT;
}

/*
 * current has no time that stands for its bytes: a VM may have written
 * just now, through a descriptor it keeps open (no inotify event, no
 * mtime change on the image file), into LV extents or over librbd. So its
 * mtime and ctime are the time of the stat: a backup tool comparing
 * (size, mtime, ctime) never takes it for unchanged. A snapshot's are
 * when it was taken, at the store's precision (store.h).
 */
static struct timespec view_time(const struct store_view *v)
{
	struct timespec ts = { 0 };

	if (v->snapshot && v->mtime) {
		ts.tv_sec = v->mtime;
		ts.tv_nsec = v->mtime_nsec >= 0 && v->mtime_nsec < 1000000000 ? v->mtime_nsec : 0;
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
	}
	return ts;
}

static bool is_file(enum fs_node_kind k)
{
	return k == FS_NODE_FILE || k == FS_NODE_ALLOCATED || k == FS_NODE_CHANGED || k == FS_NODE_PART;
}

/*
 * Bytes in a file of a view, and the bytes its data occupies (st_blocks):
 * disk.raw what the store says its layers hold, else what SEEK_DATA calls
 * data; a part file the data of disk.raw within the partition; a JSON
 * file its text (computed, and cached, to know).
 */
static void file_size(const struct target *t, uint64_t *size, uint64_t *data)
{
	struct partition p;
	struct blob *b;

	*size = *data = 0;
	switch (t->node->kind) {
	case FS_NODE_FILE:
		*size = t->view->size;
		*data = t->view->used ? t->view->used : fs_view_data_bytes(t->st, t->vol, t->view);
		break;
	case FS_NODE_PART:
		if (find_partition(t, &p) == 0) {
			*size = p.length;
			*data = fs_data_bytes(t->st, t->vol, t->view, p.start, p.length);
		}
		break;
	default:
		if (fs_extents_json(t->st, t->vol, t->view, t->older, &b) == 0)
			*size = *data = b->len;
		blob_put(b);
		break;
	}
	if (*data > *size)
		*data = *size;
}

static void fill_attr(const struct target *t, struct stat *st)
{
	uint64_t size, data;

	memset(st, 0, sizeof(*st));
	st->st_ino = t->node->ino;
	st->st_uid = opts->uid;
	st->st_gid = opts->gid;
	/* cp and friends size their buffers by it: 1 MiB reads are what the
	 * reply path serves best, above all without a page cache between. */
	st->st_blksize = 1 << 20;
	st->st_mtim.tv_sec = mount_time;
	if (is_file(t->node->kind)) {
		st->st_mode = S_IFREG | (0444 & ~opts->umask);
		st->st_nlink = 1;
		file_size(t, &size, &data);
		st->st_size = size;
		st->st_blocks = (data + 511) / 512;
		st->st_mtim = view_time(t->view);
	} else {
		st->st_mode = S_IFDIR | (0555 & ~opts->umask);
		st->st_nlink = 2;
		if (t->view)
			st->st_mtim = view_time(t->view);
		else if (t->vol && t->vol->mtime)
			st->st_mtim.tv_sec = t->vol->mtime;
	}
	st->st_atim = st->st_ctim = st->st_mtim;
}

static struct fs_node *node_of(fuse_ino_t ino)
{
	return fs_inode_find(ino);
}

/* The child `name` of a resolved directory, as a node. */
static int child_node(const struct target *t, const char *name, struct fs_node **out)
{
	struct fs_store *st;
	struct fs_node *n = NULL;

	switch (t->node->kind) {
	case FS_NODE_ROOT:
		st = fs_catalog_get_store(name);
		if (!st)
			return -ENOENT;
		fs_store_put(st);
		n = fs_inode_child(t->node, FS_NODE_STORE, name, NULL);
		break;
	case FS_NODE_STORE:
		if (!store_listing_find(t->st->listing, name))
			return -ENOENT;
		n = fs_inode_child(t->node, FS_NODE_VOLUME, name, NULL);
		break;
	case FS_NODE_VOLUME: {
		const struct store_view *v = store_volume_find_view(t->vol, name);

		if (!v)
			return -ENOENT;
		n = fs_inode_child(t->node, FS_NODE_VIEW, name, v->ident);
		break;
	}
	case FS_NODE_VIEW: {
		if (!strcmp(name, DISK_FILE)) {
			n = fs_inode_child(t->node, FS_NODE_FILE, name, NULL);
		} else if (!strcmp(name, ALLOCATED_FILE)) {
			n = fs_inode_child(t->node, FS_NODE_ALLOCATED, name, NULL);
		} else if (!strcmp(name, CHANGED_DIR)) {
			n = fs_inode_child(t->node, FS_NODE_CHANGED_DIR, name, NULL);
		} else if (!strcmp(name, PARTS_DIR)) {
			n = fs_inode_child(t->node, FS_NODE_PARTS_DIR, name, NULL);
		} else {
			return -ENOENT;
		}
		break;
	}
	case FS_NODE_PARTS_DIR: {
		struct partition p;
		struct target pt = *t;

		if ((pt.part = part_number(name)) > 0 && find_partition(&pt, &p) == 0)
			n = fs_inode_child(t->node, FS_NODE_PART, name, NULL);
		else
			return -ENOENT;
		break;
	}
	case FS_NODE_CHANGED_DIR: {
		const struct store_view *o = older_view(t, name);

		if (!o)
			return -ENOENT;
		n = fs_inode_child(t->node, FS_NODE_CHANGED, name, o->ident);
		break;
	}
	default:
		return -ENOTDIR;
	}
	if (!n)
		return -ENOMEM;
	*out = n;
	return 0;
}

static double entry_timeout(const struct target *t)
{
	/* Snapshot views never change while they exist; everything else may. */
	return t->view && t->view->snapshot ? 10.0 : 1.0;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->want |= FUSE_CAP_ASYNC_READ;
	/* Plain data runs are replied as (PV fd, offset): let the kernel splice them. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | (conn->capable & FUSE_CAP_SPLICE_MOVE);
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	/* Lookups and listings of one directory need not wait for each other. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->max_readahead = 1 << 20;
}

/* Does the request come from a thread of this very process? */
static bool own_request(fuse_req_t req)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d", c ? (int)c->pid : 0);
	return c && c->pid > 0 && access(path, F_OK) == 0;
}

/* The hidden FS_BYINO_DIR and its entries, for the daemon's own partition
 * probes (fs/partition_cache.h); nobody else sees them. 0 when name is not
 * one of them (the caller goes on), else a reply was sent. */
static int lookup_by_ino(fuse_req_t req, struct fs_node *pn, const char *name)
{
	struct fuse_entry_param e = { 0 };
	struct fs_node *n = NULL;
	struct target t;
	char *end;
	uint64_t ino;

	if (pn->kind == FS_NODE_ROOT && !strcmp(name, FS_BYINO_DIR) && own_request(req)) {
		n = fs_inode_child(pn, FS_NODE_BYINO, name, NULL);
	} else if (pn->kind == FS_NODE_BYINO) {
		ino = strtoull(name, &end, 16);
		n = own_request(req) && !*end ? fs_inode_find(ino) : NULL;
		if (n && n->kind != FS_NODE_FILE)
			n = NULL;
		if (!n)
			return fuse_reply_err(req, ENOENT), 1;
	} else {
		return 0;
	}
	if (!n || resolve(n, &t))
		return fuse_reply_err(req, ENOENT), 1;
	e.ino = n->ino;
	fill_attr(&t, &e.attr);
	target_release(&t);
	fuse_reply_entry(req, &e);
	return 1;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_node *pn = node_of(parent), *cn;
	struct target pt, ct;
	struct fuse_entry_param e;
	int rc;

	if (!pn)
		return (void)fuse_reply_err(req, ENOENT);
	if (lookup_by_ino(req, pn, name))
		return;
	rc = resolve(pn, &pt);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	rc = child_node(&pt, name, &cn);
	target_release(&pt);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	rc = resolve(cn, &ct);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	memset(&e, 0, sizeof(e));
	e.ino = cn->ino;
	fill_attr(&ct, &e.attr);
	e.attr_timeout = e.entry_timeout = entry_timeout(&ct);
	target_release(&ct);
	fuse_reply_entry(req, &e);
}

/*
 * What an opened file's inode was: an open descriptor keeps reading the bytes
 * it opened after its name has come to stand for other bytes or for none
 * (resolve: ESTALE, ENOENT), and fstat(2) of it asks for the attributes of
 * its inode, without a handle (the kernel passes one only on the read path).
 * So those attributes stay what they were, never ESTALE on a descriptor
 * whose reads still succeed.
 */
static pthread_mutex_t attr_lock = PTHREAD_MUTEX_INITIALIZER;

static void remember_attr(struct fs_node *n, const struct target *t)
{
	struct stat st;

	fill_attr(t, &st);
	pthread_mutex_lock(&attr_lock);
	if (!n->attr_at_open)
		n->attr_at_open = malloc(sizeof(st));
	if (n->attr_at_open)
		*n->attr_at_open = st;
	pthread_mutex_unlock(&attr_lock);
}

static bool remembered_attr(const struct fs_node *n, struct stat *st)
{
	bool ok;

	pthread_mutex_lock(&attr_lock);
	ok = n->attr_at_open != NULL;
	if (ok)
		*st = *n->attr_at_open;
	pthread_mutex_unlock(&attr_lock);
	return ok;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_node *n = node_of(ino);
	struct target t;
	struct stat st;
	int rc;

	if (!n)
		return (void)fuse_reply_err(req, ENOENT);
	(void)fi;
	rc = resolve(n, &t);
	if ((rc == -ESTALE || rc == -ENOENT) && remembered_attr(n, &st))
		return (void)fuse_reply_attr(req, &st, 0);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	fill_attr(&t, &st);
	fuse_reply_attr(req, &st, entry_timeout(&t));
	target_release(&t);
}

/* A directory listing, built at opendir and served in slices. */
struct dirbuf {
	char *p;
	size_t size;
};

static int dirbuf_add(fuse_req_t req, struct dirbuf *b, const char *name, fuse_ino_t ino, mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t len = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	char *np = realloc(b->p, b->size + len);

	if (!np)
		return -ENOMEM;
	b->p = np;
	fuse_add_direntry(req, b->p + b->size, len, name, &st, b->size + len);
	b->size += len;
	return 0;
}

static void dirbuf_free(void *p)
{
	struct dirbuf *b = p;

	free(b->p);
	free(b);
}

struct entries {
	char **names;
	int n;
};

static int entries_add(struct entries *e, const char *fmt, const char *arg, int num)
{
	char **grown = realloc(e->names, (e->n + 1) * sizeof(*grown));
	int rc;

	if (!grown)
		return -ENOMEM;
	e->names = grown;
	rc = arg ? asprintf(&e->names[e->n], fmt, arg) : asprintf(&e->names[e->n], fmt, num);
	if (rc < 0)
		return -ENOMEM;
	e->n++;
	return 0;
}

static void entries_free(struct entries *e)
{
	for (int i = 0; i < e->n; i++)
		free(e->names[i]);
	free(e->names);
}

/* The names a directory lists, in order. */
static int list_names(const struct target *t, struct entries *e)
{
	struct partition_table pt;
	char **names;
	int rc = 0;

	switch (t->node->kind) {
	case FS_NODE_ROOT:
		if (!(names = fs_catalog_store_names()))
			return -ENOMEM;
		for (int i = 0; names[i] && !rc; i++)
			rc = entries_add(e, "%s", names[i], 0);
		fs_catalog_free_names(names);
		return rc;
	case FS_NODE_STORE:
		for (int i = 0; i < t->st->listing->nvols && !rc; i++)
			rc = entries_add(e, "%s", t->st->listing->vols[i].name, 0);
		return rc;
	case FS_NODE_VOLUME:
		for (int i = 0; i < t->vol->nviews && !rc; i++)
			rc = entries_add(e, "%s", t->vol->views[i].name, 0);
		return rc;
	case FS_NODE_VIEW:
		rc = entries_add(e, "%s", DISK_FILE, 0);
		if (!rc)
			rc = entries_add(e, "%s", ALLOCATED_FILE, 0);
		if (!rc)
			rc = entries_add(e, "%s", CHANGED_DIR, 0);
		/* Hidden as ZFS hides .zfs: a walk would read every byte twice. */
		if (!rc && opts->partitions_visible)
			rc = entries_add(e, "%s", PARTS_DIR, 0);
		return rc;
	case FS_NODE_PARTS_DIR:
		/* A disk whose table cannot be read now just lists no partition files. */
		if (view_partitions(t, &pt) == 0) {
			for (int i = 0; i < pt.n && !rc; i++)
				rc = entries_add(e, "part%d.raw", NULL, pt.parts[i].number);
			partitions_release(&pt);
		}
		return rc;
	case FS_NODE_CHANGED_DIR:
		for (int i = 0; i < t->vol->nviews && !rc; i++)
			if (is_older(t->vol, &t->vol->views[i], t->view))
				rc = entries_add(e, "%s" JSON_SUFFIX, t->vol->views[i].name, 0);
		return rc;
	default:
		return -ENOTDIR;
	}
}

static int list_children(fuse_req_t req, const struct target *t, struct dirbuf *b)
{
	struct entries e = { 0 };
	int rc = list_names(t, &e);

	for (int i = 0; i < e.n && !rc; i++) {
		struct fs_node *c;

		rc = child_node(t, e.names[i], &c);
		if (rc == -ENOENT) { /* vanished between listing and lookup */
			rc = 0;
			continue;
		}
		if (!rc)
			rc = dirbuf_add(req, b, e.names[i], c->ino, is_file(c->kind) ? S_IFREG : S_IFDIR);
	}
	entries_free(&e);
	return rc;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_node *n = node_of(ino);
	struct dirbuf *b;
	struct target t;
	int rc;

	if (!n)
		return (void)fuse_reply_err(req, ENOENT);
	if ((rc = resolve(n, &t)))
		return (void)fuse_reply_err(req, -rc);
	if (is_file(n->kind)) {
		target_release(&t);
		return (void)fuse_reply_err(req, ENOTDIR);
	}
	b = calloc(1, sizeof(*b));
	rc = b ? 0 : -ENOMEM;
	if (!rc)
		rc = dirbuf_add(req, b, ".", n->ino, S_IFDIR);
	if (!rc)
		rc = dirbuf_add(req, b, "..", n->parent ? n->parent->ino : n->ino, S_IFDIR);
	if (!rc)
		rc = list_children(req, &t, b);
	fi->cache_readdir = t.view && t.view->snapshot;
	target_release(&t);
	if (rc) {
		if (b)
			free(b->p);
		free(b);
		return (void)fuse_reply_err(req, -rc);
	}
	fi->fh = handle_add(b, dirbuf_free);
	if (!fi->fh) {
		dirbuf_free(b);
		return (void)fuse_reply_err(req, ENOMEM);
	}
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct dirbuf *b = handle_get(fi->fh);

	(void)ino;
	if (!b)
		return (void)fuse_reply_err(req, EBADF);
	if (off < 0 || (size_t)off >= b->size)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, b->p + off, size < b->size - off ? size : b->size - off);
	handle_put(fi->fh);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_close(fi->fh);
	fuse_reply_err(req, 0);
}

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
	int rc = resolve(n, &t);

	/* resolve() answers ESTALE when the name now stands for other bytes (a
	 * snapshot retaken, a layer replaced): an open handle keeps the reader
	 * it has, whole, and never new bytes under an inode whose page cache
	 * holds old ones. */
	if (rc)
		return rc;
	rc = fs_store_view_reader(t.st, t.vol, t.view, &disk);
	if (rc == 0 && n->kind == FS_NODE_PART) {
		rc = find_partition(&t, &p);
		if (rc == 0)
			rc = slice_reader_new(disk, p.start, p.length, out);
		view_reader_put(disk);
	} else if (rc == 0) {
		*out = disk;
	}
	target_release(&t);
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

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_node *n = node_of(ino);
	struct handle *h;
	struct target t;
	int rc;

	if (!n)
		return (void)fuse_reply_err(req, ENOENT);
	if ((rc = resolve(n, &t)))
		return (void)fuse_reply_err(req, -rc);
	fi->keep_cache = t.view && t.view->snapshot;
	if (!is_file(n->kind) || (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		target_release(&t);
		return (void)fuse_reply_err(req, is_file(n->kind) ? EROFS : EISDIR);
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		target_release(&t);
		return (void)fuse_reply_err(req, ENOMEM);
	}
	h->node = n;
	h->generation = fs_catalog_generation();
	remember_attr(n, &t);
	if (n->kind == FS_NODE_ALLOCATED || n->kind == FS_NODE_CHANGED) {
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
		if (rc == 0 && !t.view->snapshot && (!opts->current_cached || h->reader->prefer_direct))
			fi->direct_io = 1;
	}
	target_release(&t);
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

static char zeros[1 << 20];

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

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
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

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
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

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_close(fi->fh);
	fuse_reply_err(req, 0);
}

/*
 * statfs: the stores' own capacity and free space (a VG's size and free
 * extents, a directory's filesystem; 0 where a store cannot say cheaply,
 * RBD), summed over the mount, so df shows what snapshots can still take.
 * f_files counts the tree's entries a walk finds (directories and files,
 * the hidden partition files left out); nothing can be created: f_ffree 0.
 */
#define STATFS_FRSIZE 4096

static uint64_t listing_files(const struct store_listing *l)
{
	uint64_t n = 1; /* the store's directory */

	for (int i = 0; i < l->nvols; i++) {
		const struct store_volume *v = &l->vols[i];

		n += 1;
		for (int j = 0; j < v->nviews; j++)
			/* the view, disk.raw, allocated.json, changed-since/, .partitions/, the JSONs */
			n += 5 + (uint64_t)(j == 0 ? v->nviews - 1 : j - 1);
	}
	return n;
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = { .f_bsize = STATFS_FRSIZE, .f_frsize = STATFS_FRSIZE, .f_namemax = 255 };
	uint64_t cap = 0, avail = 0, files = 1;
	char **names = fs_catalog_store_names();

	(void)ino;
	for (int i = 0; names && names[i]; i++) {
		struct fs_store *st = fs_catalog_get_store(names[i]);

		if (!st)
			continue;
		cap += st->listing->capacity;
		avail += st->listing->available < st->listing->capacity ? st->listing->available
									 : st->listing->capacity;
		files += listing_files(st->listing);
		fs_store_put(st);
	}
	if (names)
		fs_catalog_free_names(names);
	sv.f_blocks = cap / STATFS_FRSIZE;
	sv.f_bfree = sv.f_bavail = avail / STATFS_FRSIZE;
	sv.f_files = files;
	fuse_reply_statfs(req, &sv);
}

/* Everything that would change the tree. Snapshot mkdir/rmdir arrive with the write side. */
static void deny(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

/* The store and volume names a VOLUME node stands for. */
static int volume_names(fuse_ino_t parent, const char **vg, const char **vol)
{
	struct fs_node *n = node_of(parent);

	if (!n)
		return -ENOENT;
	if (n->kind != FS_NODE_VOLUME)
		return n->kind == FS_NODE_FILE ? -ENOTDIR : -EPERM;
	*vol = n->name;
	*vg = n->parent->name;
	return 0;
}

static void reply_new_entry(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	/* The operation refreshed the catalog: the new view is there to look up. */
	op_lookup(req, parent, name);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const char *vg, *vol;
	int rc = volume_names(parent, &vg, &vol);

	(void)mode;
	if (!rc && opts->read_only)
		rc = -EROFS;
	if (!rc)
		rc = fs_catalog_snapshot_take(vg, vol, name);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	reply_new_entry(req, parent, name);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	const char *vg, *vol;
	int rc = volume_names(parent, &vg, &vol);

	if (!rc && opts->read_only)
		rc = -EROFS;
	if (!rc && !strcmp(name, "current"))
		rc = -EBUSY;
	if (!rc)
		rc = fs_catalog_snapshot_remove(vg, vol, name);
	fuse_reply_err(req, -rc);
}

static void op_unlink(fuse_req_t req, fuse_ino_t p, const char *name)
{
	(void)p; (void)name;
	deny(req);
}

static void op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np,
		      const char *nname, unsigned int flags)
{
	(void)p; (void)name; (void)np; (void)nname; (void)flags;
	deny(req);
}

static void op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	(void)p; (void)name; (void)mode; (void)fi;
	deny(req);
}

static void op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev)
{
	(void)p; (void)name; (void)mode; (void)rdev;
	deny(req);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name)
{
	(void)link; (void)p; (void)name;
	deny(req);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nname)
{
	(void)ino; (void)np; (void)nname;
	deny(req);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)ino; (void)attr; (void)to_set; (void)fi;
	deny(req);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino; (void)buf; (void)size; (void)off; (void)fi;
	deny(req);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.lseek = op_lseek,
	.statfs = op_statfs,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.rename = op_rename,
	.create = op_create,
	.mknod = op_mknod,
	.symlink = op_symlink,
	.link = op_link,
	.setattr = op_setattr,
	.write = op_write,
};

const struct fuse_lowlevel_ops *fs_ops(const struct fs_options *o)
{
	opts = o;
	fs_partitions_init(o->mountpoint);
	mount_time = time(NULL);
	return &ops;
}
