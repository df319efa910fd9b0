/*
 * ops_parts: the FUSE low-level operations, by the file that holds them;
 * fs/ops.c puts them in one table. Each replies exactly once on every
 * path (passthrough_hp's rule): `return (void)fuse_reply_err(req, e)` for
 * early exits; the helpers they call return an errno and never reply.
 */
#ifndef VSTORFS_FS_OPS_PARTS_H
#define VSTORFS_FS_OPS_PARTS_H

#include "fs/inode.h"

struct target;

/* lookup.c: names to nodes, attributes, statfs */
void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_statfs(fuse_req_t req, fuse_ino_t ino);
/* An opened file's attributes, for fstat(2) after its name went (lookup.c). */
void fs_remember_attr(struct fs_node *n, const struct target *t);

/* listing.c: directories */
void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* read_path.c: files */
void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void fs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);
void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

/* snapshot_ops.c: mkdir, rmdir, and everything else that would write */
void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_unlink(fuse_req_t req, fuse_ino_t p, const char *name);
void fs_op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np, const char *nname,
		  unsigned int flags);
void fs_op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, struct fuse_file_info *fi);
void fs_op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev);
void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name);
void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nname);
void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi);
void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi);

#endif
