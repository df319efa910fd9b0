/*
 * snapshot_ops: mkdir and rmdir under a volume directory take and delete
 * snapshots (the catalog runs them, after the checks every store shares:
 * store/snapshot_rules.h, fs/snapshot_checks.h); everything else that
 * would change the tree is refused with EROFS.
 */
#include <errno.h>

#include "fs/catalog.h"
#include "fs/ops_parts.h"
#include "fs/tree.h"

/* Everything else that would change the tree. */
static void deny(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

/* The store and volume names a VOLUME node stands for. */
static int volume_names(fuse_ino_t parent, const char **vg, const char **vol)
{
	struct fs_node *n = fs_inode_find(parent);

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
	fs_op_lookup(req, parent, name);
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const char *vg, *vol;
	int rc = volume_names(parent, &vg, &vol);

	(void)mode;
	if (!rc)
		rc = fs_catalog_snapshot_take(vg, vol, name);
	if (rc)
		return (void)fuse_reply_err(req, -rc);
	reply_new_entry(req, parent, name);
}

void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	const char *vg, *vol;
	int rc = volume_names(parent, &vg, &vol);

	if (!rc)
		rc = fs_catalog_snapshot_remove(vg, vol, name);
	fuse_reply_err(req, -rc);
}

void fs_op_unlink(fuse_req_t req, fuse_ino_t p, const char *name)
{
	(void)p; (void)name;
	deny(req);
}

void fs_op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np,
		  const char *nname, unsigned int flags)
{
	(void)p; (void)name; (void)np; (void)nname; (void)flags;
	deny(req);
}

void fs_op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
		  struct fuse_file_info *fi)
{
	(void)p; (void)name; (void)mode; (void)fi;
	deny(req);
}

void fs_op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev)
{
	(void)p; (void)name; (void)mode; (void)rdev;
	deny(req);
}

void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name)
{
	(void)link; (void)p; (void)name;
	deny(req);
}

void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nname)
{
	(void)ino; (void)np; (void)nname;
	deny(req);
}

void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		   struct fuse_file_info *fi)
{
	(void)ino; (void)attr; (void)to_set; (void)fi;
	deny(req);
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	(void)ino; (void)buf; (void)size; (void)off; (void)fi;
	deny(req);
}
