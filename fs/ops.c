/*
 * ops: the FUSE low-level operation table of the read-only tree
 * MOUNT/<store>/<volume>/<view>/disk.raw. The operations live by job:
 * lookup.c (lookup, getattr, statfs), listing.c (directories),
 * read_path.c (open, read, lseek, release), snapshot_ops.c (mkdir, rmdir,
 * the refusals); what each node kind is and does, fs/node_kinds.c.
 */
#include "ops.h"

#include "fs/ops_parts.h"
#include "fs/partition_cache.h"
#include "fs/tree.h"
#include "fs/options.h"

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


static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = fs_op_lookup,
	.getattr = fs_op_getattr,
	.opendir = fs_op_opendir,
	.readdir = fs_op_readdir,
	.releasedir = fs_op_releasedir,
	.open = fs_op_open,
	.read = fs_op_read,
	.release = fs_op_release,
	.lseek = fs_op_lseek,
	.statfs = fs_op_statfs,
	.mkdir = fs_op_mkdir,
	.rmdir = fs_op_rmdir,
	.unlink = fs_op_unlink,
	.rename = fs_op_rename,
	.create = fs_op_create,
	.mknod = fs_op_mknod,
	.symlink = fs_op_symlink,
	.link = fs_op_link,
	.setattr = fs_op_setattr,
	.write = fs_op_write,
};

const struct fuse_lowlevel_ops *fs_ops(const struct fs_options *o)
{
	fs_tree_init(o);
	fs_partitions_init(o->mountpoint);
	return &ops;
}
