/*
 * lookup: names to nodes (lookup), nodes to attributes (getattr), and the
 * mount's statfs. A node is resolved against the newest published catalog
 * on every call, so the tree follows store changes without remounts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "fs/ops_parts.h"
#include "fs/partition_cache.h"
#include "fs/tree.h"

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
	if (!n || fs_resolve(n, &t))
		return fuse_reply_err(req, ENOENT), 1;
	e.ino = n->ino;
	fs_fill_attr(&t, &e.attr);
	fs_target_release(&t);
	fuse_reply_entry(req, &e);
	return 1;
}

void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_node *pn = fs_inode_find(parent), *cn;
	struct target pt, ct;
	struct fuse_entry_param e;
	int rc;

	if (!pn)
		return (void)fuse_reply_err(req, ENOENT);
	if (lookup_by_ino(req, pn, name))
		return;
	rc = fs_resolve(pn, &pt);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	rc = fs_child_node(&pt, name, &cn);
	fs_target_release(&pt);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	rc = fs_resolve(cn, &ct);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	memset(&e, 0, sizeof(e));
	e.ino = cn->ino;
	fs_fill_attr(&ct, &e.attr);
	e.attr_timeout = e.entry_timeout = fs_entry_timeout(&ct);
	fs_target_release(&ct);
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
static pthread_mutex_t attr_lock = PTHREAD_MUTEX_INITIALIZER; /* fs_node.attr_at_open; taken alone */

void fs_remember_attr(struct fs_node *n, const struct target *t)
{
	struct stat st;

	fs_fill_attr(t, &st);
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

void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_node *n = fs_inode_find(ino);
	struct target t;
	struct stat st;
	int rc;

	if (!n)
		return (void)fuse_reply_err(req, ENOENT);
	(void)fi;
	rc = fs_resolve(n, &t);
	if ((rc == -ESTALE || rc == -ENOENT) && remembered_attr(n, &st))
		return (void)fuse_reply_attr(req, &st, 0);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	fs_fill_attr(&t, &st);
	fuse_reply_attr(req, &st, fs_entry_timeout(&t));
	fs_target_release(&t);
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

void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
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
