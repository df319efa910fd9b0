/*
 * file_io: plain files as chain/ layers, for the command-line tools
 * (qcow2cat reads chains of them, qcow2merge merges two of them, qcow2snap
 * edits the snapshot table of one).
 *
 * A backing string is resolved relative to the directory of the image that
 * names it; a string with a '/' is refused unless it is an absolute path
 * inside that same directory (the file analogue of "stays inside the VG").
 * Layer identity for loop detection is the (st_dev, st_ino) pair, or with
 * TOOL_FILE_ID_BY_NAME the file name up to its first '@' (so a copy named
 * "a@2" stands for the same layer as "a"); backing layers inherit it.
 */
#ifndef VSTORFS_TOOLS_FILE_IO_H
#define VSTORFS_TOOLS_FILE_IO_H

#include <stdbool.h>

#include "chain/chain.h"

enum tool_file_flags {
	TOOL_FILE_WRITE      = 1, /* pwrite/flush, inside the file's size as in an LV */
	TOOL_FILE_GROWS      = 2, /* with WRITE: a write past the end extends the file */
	TOOL_FILE_ID_BY_NAME = 4,
};

/* 0 and *out, or a negative errno (-ENOENT when the file is missing, -EINVAL
 * when it is not a regular file). */
int tool_file_open(const char *path, unsigned flags, struct layer_io **out);

/* The path a backing string of the layer `from` names (malloc'd), or NULL
 * with *err set (-EACCES outside from's directory, -ENOMEM). */
char *tool_file_backing_path(struct layer_io *from, const char *backing, int *err);

/* Resolves backing strings as above. */
extern const struct chain_store file_io_store;

#endif
