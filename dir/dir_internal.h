/*
 * dir_internal: what the directory store's files share (not for fs/).
 *
 * Everything a directory store reads or changes is opened relative to one
 * directory fd, the store root, and confined below it (file_io.c): no path
 * string is ever handed to open(2) on its own.
 */
#ifndef VSTORFS_DIR_INTERNAL_H
#define VSTORFS_DIR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "chain/chain.h"
#include "chain/layer_io.h"

#define DIR_INTENT_PREFIX  ".vstorfs-intent-"
#define DIR_SCRATCH_PREFIX ".vstorfs-new-"
#define DIR_SCRATCH_SUFFIX ".tmp"
#define DIR_INTENT_SUFFIX  ".op"      /* never ".qcow2"/".raw": Proxmox must not take it for a volume */
#define DIR_SNAPTIMES_PREFIX ".vstorfs-snaps-"
#define DIR_SNAPTIMES_SUFFIX ".times"
#define DIR_MAX_FILES      100000   /* per directory; more is refused with one log line */
#define DIR_MAX_SNAPSHOTS  1024     /* views per volume */

/* ---- file_io.c: confined opens and a layer_io over a file ---- */

/* openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS) when the kernel has it,
 * else a component walk refusing symlinks and "..": -EXDEV/-ELOOP when
 * rel would leave root. rel is relative ("images/100/x.qcow2"). */
int dir_openat(int rootfd, const char *rel, int flags, mode_t mode);
/* The same confinement for directories (O_DIRECTORY|O_RDONLY). */
int dir_opendir_fd(int rootfd, const char *rel);
int dir_fstatat(int rootfd, const char *rel, struct stat *st);
/* Open rel (confined) only if it is a regular file, never blocking in
 * open(2): the type is checked through an O_PATH descriptor first and
 * again with fstat after an O_NONBLOCK open. The fd (O_NONBLOCK cleared)
 * and its stat, or -EINVAL for anything but a regular file (FIFO, socket,
 * device, directory), -ENOENT, -EXDEV/-ELOOP. */
int dir_open_regular(int rootfd, const char *rel, int flags, struct stat *st);

/* Open rel below root as a layer. rw: O_RDWR (write side ops present).
 * label_prefix: the store name ("vz"), for io->name "vz/images/100/x.qcow2".
 * -ENOENT missing, -EINVAL not a regular file, -EXDEV/-ELOOP escapes. */
int file_io_open(int rootfd, const char *label_prefix, const char *rel, bool rw,
		 struct layer_io **out);
/* The same, writable, and writes past the end extend the file (io->size
 * grows): what qcow2_snapshot's QCOW2_SNAP_GROW expects of a layer. */
int file_io_open_grow(int rootfd, const char *label_prefix, const char *rel, struct layer_io **out);
/* rel path (below root) of a layer opened by file_io_open, or NULL for other layers. */
const char *file_io_rel(struct layer_io *io);
int file_io_fd(struct layer_io *io);
/* Reads of io pass its file's gate in `set` (common/io_gate.h), and it
 * hands out no fds to splice: for stores on network filesystems. */
struct io_gate_set;
void file_io_set_gate(struct layer_io *io, struct io_gate_set *set);
/* The device and inode io was opened on; -EINVAL for other layers. */
int file_io_dev_ino(struct layer_io *io, uint64_t *dev, uint64_t *ino);
/* Grow the file (sparse) so writers have room: size becomes at least `size`. */
int file_io_grow(struct layer_io *io, uint64_t size);
/* Birth time (statx) when the filesystem has it, else mtime. */
int64_t dir_birth_time(int fd);

/* unlink/rename/lstat-exists of files below root, through their parent opened confined.
 * dir_rename fsyncs the target's directory; noreplace: -EEXIST if `to` exists. */
int dir_unlink(int rootfd, const char *rel);
int dir_rename(int rootfd, const char *from, const char *to, bool noreplace);
bool dir_exists(int rootfd, const char *rel);

/* fsync the directory containing rel (the root itself for top-level files). */
int dir_fsync_parent(int rootfd, const char *rel);
/* Write `data` to rel atomically and durably (tmp file, fsync, rename, fsync dir). */
int dir_write_file_atomic(int rootfd, const char *rel, const char *data, size_t len);
/* Read a small file (< 64 KiB) into a malloc'd NUL-terminated string. */
int dir_read_small(int rootfd, const char *rel, char **out);

/* ---- dir_overlay.c: Proxmox's overlay on "preallocation off" storages ---- */
uint64_t dir_overlay_sparse_size(uint64_t vsize);   /* 0: too large for this layout */
int dir_overlay_create_sparse(struct layer_io *io, uint64_t vsize, const char *backing,
			      const char *backing_format);

/* ---- dir_backing.c: backing strings resolved inside the store ---- */

struct dir_backing {
	int rootfd;
	const char *store;     /* label prefix */
	const char *abspath;   /* the store's path as mounted (no trailing '/') */
	const char *realpath;  /* realpath of it */
	bool has_base;         /* "_base" exists: Nova's absolute backing paths are re-rooted */
	struct io_gate_set *gates; /* network filesystems: every layer read through a gate, else NULL */
};

void dir_backing_init(struct chain_store *cs, struct dir_backing *b);
/* The rel path below root that `backing`, written in the layer at rel
 * `from_rel`, names. 0, or -EACCES when it leaves the store (logged by the caller). */
int dir_backing_resolve(const struct dir_backing *b, const char *from_rel, const char *backing,
			char **rel_out);
/* Lexically normalise "a/b/../c" (no leading '/'): -EACCES if it climbs above the root. */
int dir_normalize(const char *path, char **out);

#endif
