/*
 * file_io: see file_io.h. A tiny layer_io over a file descriptor.
 */
#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_io {
	struct layer_io io;
	int fd;
	char *path;     /* as opened; its directory resolves backing strings */
	unsigned flags;
	char id[64];
};

static int file_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	struct file_io *f = (struct file_io *)io;

	if (off > io->size || len > io->size - off)
		return -EIO;
	while (len) {
		ssize_t n = pread(f->fd, buf, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf = (char *)buf + n;
		len -= n;
		off += n;
	}
	return 0;
}

static int file_pwrite(struct layer_io *io, const void *buf, size_t len, uint64_t off)
{
	struct file_io *f = (struct file_io *)io;
	uint64_t end = off + len;

	/* An LV cannot grow under a write: neither can this layer, unless told. */
	if (!(f->flags & TOOL_FILE_GROWS) && (off > io->size || len > io->size - off))
		return -ENOSPC;
	while (len) {
		ssize_t n = pwrite(f->fd, buf, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf = (const char *)buf + n;
		len -= n;
		off += n;
	}
	if (end > io->size)
		io->size = end;
	return 0;
}

static int file_flush(struct layer_io *io)
{
	return fdatasync(((struct file_io *)io)->fd) ? -errno : 0;
}

static void file_close(struct layer_io *io)
{
	struct file_io *f = (struct file_io *)io;

	close(f->fd);
	free(f->path);
	free(f);
}

static const struct layer_io_ops ro_ops = { .pread = file_pread, .close = file_close };
static const struct layer_io_ops rw_ops = {
	.pread = file_pread, .close = file_close, .pwrite = file_pwrite, .flush = file_flush,
};

int tool_file_open(const char *path, unsigned flags, struct layer_io **out)
{
	bool writable = flags & TOOL_FILE_WRITE;
	struct file_io *f = calloc(1, sizeof(*f));
	struct stat st;

	if (!f)
		return -ENOMEM;
	f->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (f->fd < 0 || fstat(f->fd, &st) || !S_ISREG(st.st_mode)) {
		int rc = f->fd < 0 ? -errno : -EINVAL;

		if (f->fd >= 0)
			close(f->fd);
		free(f);
		return rc;
	}
	f->path = strdup(path);
	if (!f->path) {
		close(f->fd);
		free(f);
		return -ENOMEM;
	}
	f->flags = flags;
	if (flags & TOOL_FILE_ID_BY_NAME) {
		const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

		snprintf(f->id, sizeof(f->id), "%.*s", (int)strcspn(base, "@"), base);
	} else {
		snprintf(f->id, sizeof(f->id), "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
	}
	f->io.ops = writable ? &rw_ops : &ro_ops;
	f->io.size = st.st_size;
	f->io.name = f->path;
	f->io.id = f->id;
	*out = &f->io;
	return 0;
}

/* The directory part of path ("." when none), malloc'd. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, slash - path);
}

char *tool_file_backing_path(struct layer_io *from, const char *backing, int *err)
{
	char *dir = dir_of(((struct file_io *)from)->path), *path = NULL;
	char real_dir[PATH_MAX], real_bdir[PATH_MAX];

	*err = -ENOMEM;
	if (!dir)
		return NULL;
	*err = -EACCES;
	if (backing[0] == '/') {
		char *bdir = dir_of(backing);

		/* Absolute: only inside the directory of the image naming it. */
		if (bdir && realpath(dir, real_dir) && realpath(bdir, real_bdir) &&
		    !strcmp(real_dir, real_bdir) && strcmp(strrchr(backing, '/') + 1, "..") &&
		    strcmp(strrchr(backing, '/') + 1, "."))
			path = strdup(backing);
		free(bdir);
	} else if (!strchr(backing, '/') && strcmp(backing, ".") && strcmp(backing, "..")) {
		if (asprintf(&path, "%s/%s", dir, backing) < 0)
			path = NULL;
	}
	free(dir);
	if (path)
		*err = 0;
	return path;
}

static int open_backing(const struct chain_store *st, struct layer_io *from, const char *backing,
			struct layer_io **out)
{
	int rc;
	char *path = tool_file_backing_path(from, backing, &rc);

	(void)st;
	if (!path)
		return rc;
	rc = tool_file_open(path, ((struct file_io *)from)->flags & TOOL_FILE_ID_BY_NAME, out);
	if (rc && rc != -ENOENT && rc != -ENOMEM)
		rc = -EIO;
	free(path);
	return rc;
}

const struct chain_store file_io_store = { .open_backing = open_backing };
