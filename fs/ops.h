#ifndef VSTORFS_FS_OPS_H
#define VSTORFS_FS_OPS_H

#include "inode.h"

struct fs_options;

/* The low-level operation table; o must outlive the session. */
const struct fuse_lowlevel_ops *fs_ops(const struct fs_options *o);

#endif
