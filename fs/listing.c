/*
 * listing: directories. A listing is built at opendir, from the names the
 * node kind lists (fs/node_kinds.c), and served in slices by readdir.
 * Partition files live in <view>/.partitions, which the view leaves out
 * (partitions=visible lists it), so a walk of the tree reads each byte of
 * a view once.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "fs/handles.h"
#include "fs/ops_parts.h"
#include "fs/tree.h"

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

static int list_children(fuse_req_t req, const struct target *t, struct dirbuf *b)
{
	struct fs_names e = { 0 };
	int rc = fs_list_names(t, &e);

	for (int i = 0; i < e.n && !rc; i++) {
		struct fs_node *c;

		rc = fs_child_node(t, e.names[i], &c);
		if (rc == -ENOENT) { /* vanished between listing and lookup */
			rc = 0;
			continue;
		}
		if (!rc)
			rc = dirbuf_add(req, b, e.names[i], c->ino, fs_kind(c->kind)->file ? S_IFREG : S_IFDIR);
	}
	fs_names_free(&e);
	return rc;
}

void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_node *n = fs_inode_find(ino);
	struct dirbuf *b;
	struct target t;
	int rc;

	if (!n)
		return (void)fuse_reply_err(req, ENOENT);
	if ((rc = fs_resolve(n, &t)))
		return (void)fuse_reply_err(req, -rc);
	if (fs_kind(n->kind)->file) {
		fs_target_release(&t);
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
	fs_target_release(&t);
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

void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
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

void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_close(fi->fh);
	fuse_reply_err(req, 0);
}
