/*
 * layer_io: the bytes of one layer of a chain (an LV, later a file), as a
 * volume store hands them to chain/. chain/ never knows where they live.
 *
 * Contract for implementations:
 *  - pread reads exactly len bytes at off, or returns a negative errno.
 *    A range reaching past size() is -EIO (never a short read).
 *  - name() is stable for the life of the object and is what logs show
 *    ("pve/vm-100-disk-0.qcow2").
 *  - id() identifies the underlying layer (an LV UUID); two opens of the
 *    same layer give equal ids. chain/ uses it to detect backing loops.
 *  - map_fd may be NULL. When present it reports the file descriptor and
 *    offset holding [off, off + *len) and shortens *len to the contiguous
 *    run; readers may then splice/pread straight from that fd.
 *  - All calls may come from several threads at once.
 */
#ifndef VSTORFS_LAYER_IO_H
#define VSTORFS_LAYER_IO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

struct layer_io;

struct layer_io_ops {
	int (*pread)(struct layer_io *io, void *buf, size_t len, uint64_t off);
	int (*map_fd)(struct layer_io *io, uint64_t off, uint64_t *len, int *fd, uint64_t *fd_off);
	void (*close)(struct layer_io *io);
	/* Write side, NULL for read-only layers. pwrite writes exactly len
	 * bytes inside size(); flush makes every completed write durable. */
	int (*pwrite)(struct layer_io *io, const void *buf, size_t len, uint64_t off);
	int (*flush)(struct layer_io *io);
};

struct layer_io {
	const struct layer_io_ops *ops;
	uint64_t size;      /* bytes in the layer (the LV size) */
	const char *name;   /* for logs: "<vg>/<lv>" */
	const char *id;     /* identity for loop detection (LV UUID) */
	int64_t ctime;      /* creation time of the layer, seconds since epoch, 0 if unknown */
};

static inline int layer_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	return io->ops->pread(io, buf, len, off);
}

static inline int layer_pwrite(struct layer_io *io, const void *buf, size_t len, uint64_t off)
{
	return io->ops->pwrite ? io->ops->pwrite(io, buf, len, off) : -EROFS;
}

static inline int layer_flush(struct layer_io *io)
{
	return io->ops->flush ? io->ops->flush(io) : -EROFS;
}

static inline void layer_close(struct layer_io *io)
{
	if (io)
		io->ops->close(io);
}

#endif
