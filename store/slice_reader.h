/*
 * slice_reader: a byte range of another view_reader as a reader of its
 * own: a partition of a disk (part<N>.raw). Reads and maps are the
 * parent's, shifted; nothing is copied.
 */
#ifndef VSTORFS_SLICE_READER_H
#define VSTORFS_SLICE_READER_H

#include "store/view_reader.h"

/* Takes a reference on parent. [start, start + len) must lie inside it. 0 or -ENOMEM/-EINVAL. */
int slice_reader_new(struct view_reader *parent, uint64_t start, uint64_t len, struct view_reader **out);

#endif
