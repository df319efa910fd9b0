/*
 * copy_reply: a read answered from one buffer per thread, for replies
 * libfuse cannot splice.
 *
 * libfuse splices a reply only when its pipe can hold the whole reply plus
 * a page per buffer; a pipe grows past /proc/sys/fs/pipe-max-size (1 MiB by
 * default) only with CAP_SYS_RESOURCE, so a 1 MiB read is copied anyway.
 * libfuse's copy then allocates a fresh buffer per reply and copies every
 * run into it, zero runs included; here the runs are read straight into a
 * buffer the thread keeps.
 */
#ifndef VSTORFS_COPY_REPLY_H
#define VSTORFS_COPY_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "inode.h"
#include "store/view_reader.h"

/* The longest reply of up to nbufs buffers that libfuse can splice on
 * this host (the pipe size is found once). */
size_t copy_reply_splice_max(unsigned nbufs);

/* Reads [off, off+len) of vr and replies with it; 0, or a negative errno
 * and nothing was replied. */
int copy_reply(fuse_req_t req, struct view_reader *vr, uint64_t off, size_t len);

#endif
