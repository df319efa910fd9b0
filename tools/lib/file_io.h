/*
 * file_io: plain files as chain/ layers, for the command-line tools
 * (qcow2cat reads chains of them, qcow2merge merges two of them).
 *
 * A backing string is resolved relative to the directory of the image that
 * names it; a string with a '/' is refused unless it is an absolute path
 * inside that same directory (the file analogue of "stays inside the VG").
 * Layer identity for loop detection is the (st_dev, st_ino) pair.
 */
#ifndef VSTORFS_TOOLS_FILE_IO_H
#define VSTORFS_TOOLS_FILE_IO_H

#include <stdbool.h>

#include "chain/chain.h"

/* 0 and *out, or a negative errno (-ENOENT when the file is missing).
 * writable: the layer gets pwrite/flush; its size is the file's size. */
int tool_file_open(const char *path, bool writable, struct layer_io **out);

/* The path a backing string of the layer `from` names (malloc'd), or NULL
 * with *err set (-EACCES outside from's directory, -ENOMEM). */
char *tool_file_backing_path(struct layer_io *from, const char *backing, int *err);

/* Resolves backing strings as above. */
extern const struct chain_store file_io_store;

#endif
