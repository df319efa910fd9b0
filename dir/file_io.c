/*
 * file_io: the bytes of one image file as a layer_io, opened confined below
 * the store's root directory fd. See dir_internal.h.
 *
 * Confinement: openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) lets a
 * symlink point anywhere below the root and refuses everything else
 * (absolute targets, ".." above the root, /proc magic links). Kernels
 * without openat2 get a walk of our own, one component at a time with
 * O_NOFOLLOW, refusing every symlink and "..": stricter, never looser.
 */
#include "dir/dir_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/io_gate.h"
#include "common/log.h"
#include "common/log_cause.h"

static int have_openat2 = -1; /* -1 unknown, 0 no, 1 yes */

static int walk_open(int rootfd, const char *rel, int flags, mode_t mode)
{
	char *copy = strdup(rel), *save = NULL, *comp, *next;
	int dirfd = -1, fd = -1;

	if (!copy)
		return -ENOMEM;
	dirfd = fcntl(rootfd, F_DUPFD_CLOEXEC, 0);
	if (dirfd < 0) {
		free(copy);
		return -errno;
	}
	comp = strtok_r(copy, "/", &save);
	while (comp) {
		next = strtok_r(NULL, "/", &save);
		if (!strcmp(comp, "..")) {
			fd = -EXDEV;
			break;
		}
		if (!strcmp(comp, ".")) {
			comp = next;
			continue;
		}
		if (next) {
			int nfd = openat(dirfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (nfd < 0) {
				fd = errno == ENOTDIR ? -ELOOP : -errno;
				break;
			}
			close(dirfd);
			dirfd = nfd;
		} else {
			fd = openat(dirfd, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
			if (fd < 0)
				fd = -errno;
		}
		comp = next;
	}
	if (fd == -1) /* rel was only "." components */
		fd = -EINVAL;
	close(dirfd);
	free(copy);
	return fd;
}

int dir_openat(int rootfd, const char *rel, int flags, mode_t mode)
{
	struct open_how how = { 0 };
	long fd;

	if (!rel[0] || rel[0] == '/')
		return -EXDEV;
	if (have_openat2 != 0) {
		how.flags = (uint64_t)(flags | O_CLOEXEC);
		how.mode = (flags & O_CREAT) ? mode : 0;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
		if (fd >= 0) {
			have_openat2 = 1;
			return (int)fd;
		}
		if (errno != ENOSYS)
			return -errno;
		have_openat2 = 0;
	}
	return walk_open(rootfd, rel, flags, mode);
}

int dir_opendir_fd(int rootfd, const char *rel)
{
	if (!rel[0] || !strcmp(rel, ".")) {
		/* A fresh open, not a dup: a dup would share the root fd's directory offset. */
		int fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		return fd < 0 ? -errno : fd;
	}
	return dir_openat(rootfd, rel, O_RDONLY | O_DIRECTORY, 0);
}

int dir_fstatat(int rootfd, const char *rel, struct stat *st)
{
	int fd = dir_openat(rootfd, rel, O_PATH, 0), rc = 0;

	if (fd < 0)
		return fd;
	if (fstat(fd, st))
		rc = -errno;
	close(fd);
	return rc;
}

int64_t dir_birth_time(int fd)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_BTIME | STATX_MTIME, &stx) == 0) {
		if (stx.stx_mask & STATX_BTIME)
			return stx.stx_btime.tv_sec;
		return stx.stx_mtime.tv_sec;
	}
	return 0;
}

struct file_io {
	struct layer_io io;
	int fd;
	char *rel;
	char *name;
	char id[64];
	bool grow;
	struct io_gate *gate;   /* network filesystems: bounds the threads a hung file holds */
};

/* A read found no bytes where the file held some at open: truncated under
 * us. Never zeros, never EOF: EIO, logged once per layer and size. The size
 * is the file's own (fstat), not where the read stopped: readers at many
 * offsets of one truncated file are one fault. */
static int shrank(struct file_io *f, uint64_t stopped)
{
	char subject[96], cause[64];
	struct stat st;
	uint64_t now = fstat(f->fd, &st) == 0 ? (uint64_t)st.st_size : stopped;

	snprintf(subject, sizeof(subject), "short:%s", f->id);
	snprintf(cause, sizeof(cause), "%" PRIu64, now);
	if (log_cause_new(subject, cause))
		vlog(LOG_ERR, "%s: the file was truncated to %" PRIu64 " bytes while in use (was %" PRIu64
		     "): reads past %" PRIu64 " fail with EIO", f->name, now, f->io.size, now);
	return -EIO;
}

static int fio_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	struct file_io *f = (struct file_io *)io;
	int rc = 0;

	if (off > io->size || len > io->size - off)
		return -EIO;
	if (f->gate && (rc = io_gate_enter(f->gate, f->name)))
		return rc;
	while (len) {
		ssize_t n = pread(f->fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : shrank(f, off);
			break;
		}
		buf = (char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	if (f->gate)
		io_gate_leave(f->gate);
	return rc;
}

/*
 * Runs handed out here are spliced by libfuse after we return: a file that
 * shrank would end the reply short, which the kernel takes for EOF. So the
 * file's size now is checked first (one fstat; a truncate racing the splice
 * itself can still cut that one reply). A gated layer hands out no fd at
 * all: its reads must go through fio_pread, where the gate counts them.
 */
static int fio_map_fd(struct layer_io *io, uint64_t off, uint64_t *len, int *fd, uint64_t *fd_off)
{
	struct file_io *f = (struct file_io *)io;
	struct stat st;

	if (off > io->size || *len > io->size - off)
		return -EIO;
	if (f->gate)
		return -EAGAIN;
	if (fstat(f->fd, &st))
		return -errno;
	if ((uint64_t)st.st_size < off + *len)
		return shrank(f, (uint64_t)st.st_size);
	*fd = f->fd;
	*fd_off = off;
	return 0;
}

static int fio_pwrite(struct layer_io *io, const void *buf, size_t len, uint64_t off)
{
	struct file_io *f = (struct file_io *)io;

	if (f->grow && off + len > io->size && off + len >= off) {
		if (ftruncate(f->fd, (off_t)(off + len)))
			return -errno;
		io->size = off + len;
	}
	if (off > io->size || len > io->size - off)
		return -EIO;
	while (len) {
		ssize_t n = pwrite(f->fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf = (const char *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int fio_flush(struct layer_io *io)
{
	struct file_io *f = (struct file_io *)io;

	return fdatasync(f->fd) ? -errno : 0;
}

static void fio_close(struct layer_io *io)
{
	struct file_io *f = (struct file_io *)io;

	close(f->fd);
	io_gate_put(f->gate);
	free(f->rel);
	free(f->name);
	free(f);
}

static const struct layer_io_ops fio_ro_ops = {
	.pread = fio_pread, .map_fd = fio_map_fd, .close = fio_close,
};
static const struct layer_io_ops fio_rw_ops = {
	.pread = fio_pread, .map_fd = fio_map_fd, .close = fio_close,
	.pwrite = fio_pwrite, .flush = fio_flush,
};

int file_io_open_grow(int rootfd, const char *label_prefix, const char *rel, struct layer_io **out)
{
	int rc = file_io_open(rootfd, label_prefix, rel, true, out);

	if (rc == 0)
		((struct file_io *)*out)->grow = true;
	return rc;
}

int dir_open_regular(int rootfd, const char *rel, int flags, struct stat *st)
{
	struct stat pre;
	int fd = dir_openat(rootfd, rel, O_PATH, 0), fl;

	/* Look before opening: opening a FIFO waits for a writer, a device
	 * may act on open (a tape rewinds), a socket fails oddly. O_PATH
	 * opens nothing. */
	if (fd < 0)
		return fd;
	if (fstat(fd, &pre)) {
		fl = -errno;
		close(fd);
		return fl;
	}
	close(fd);
	if (!S_ISREG(pre.st_mode))
		return -EINVAL;
	/* The name may be swapped for a FIFO in between: O_NONBLOCK keeps
	 * even that open from waiting, and the fstat below refuses it. */
	fd = dir_openat(rootfd, rel, flags | O_NONBLOCK, 0);
	if (fd < 0)
		return fd == -ENXIO ? -EINVAL : fd;   /* ENXIO: a socket or a FIFO without writer */
	if (fstat(fd, st) || !S_ISREG(st->st_mode)) {
		close(fd);
		return -EINVAL;
	}
	/* Regular files ignore O_NONBLOCK on most filesystems, but not all
	 * (mandatory locks, some FUSE servers): reads must block normally. */
	fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

int file_io_open(int rootfd, const char *label_prefix, const char *rel, bool rw,
		 struct layer_io **out)
{
	struct file_io *f;
	struct stat st;
	int fd = dir_open_regular(rootfd, rel, rw ? O_RDWR : O_RDONLY, &st);

	*out = NULL;
	if (fd < 0)
		return fd;
	f = calloc(1, sizeof(*f));
	if (!f || !(f->rel = strdup(rel)) || asprintf(&f->name, "%s/%s", label_prefix, rel) < 0) {
		if (f) {
			free(f->rel);
			free(f);
		}
		close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	snprintf(f->id, sizeof(f->id), "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
	f->io.ops = rw ? &fio_rw_ops : &fio_ro_ops;
	f->io.size = (uint64_t)st.st_size;
	f->io.name = f->name;
	f->io.id = f->id;
	f->io.ctime = dir_birth_time(fd);
	*out = &f->io;
	return 0;
}

const char *file_io_rel(struct layer_io *io)
{
	if (!io || (io->ops != &fio_ro_ops && io->ops != &fio_rw_ops))
		return NULL;
	return ((struct file_io *)io)->rel;
}

void file_io_set_gate(struct layer_io *io, struct io_gate_set *set)
{
	struct file_io *f = (struct file_io *)io;

	if (file_io_rel(io) && set && !f->gate)
		f->gate = io_gate_get(set, f->id);
}

int file_io_dev_ino(struct layer_io *io, uint64_t *dev, uint64_t *ino)
{
	unsigned long long d, i;

	if (!file_io_rel(io) || sscanf(((struct file_io *)io)->id, "%llu:%llu", &d, &i) != 2)
		return -EINVAL;
	*dev = d;
	*ino = i;
	return 0;
}

int file_io_fd(struct layer_io *io)
{
	return file_io_rel(io) ? ((struct file_io *)io)->fd : -1;
}

int file_io_grow(struct layer_io *io, uint64_t size)
{
	struct file_io *f = (struct file_io *)io;

	if (!file_io_rel(io))
		return -EINVAL;
	if (size <= io->size)
		return 0;
	if (ftruncate(f->fd, (off_t)size))
		return -errno;
	io->size = size;
	return 0;
}

/* ---- changes, confined like the opens: the parent opened below the root, then *at(2) on it ---- */

static int open_parent(int rootfd, const char *rel, const char **base)
{
	const char *slash = strrchr(rel, '/');
	char *dir;
	int fd;

	*base = slash ? slash + 1 : rel;
	if (!**base || !strcmp(*base, ".") || !strcmp(*base, ".."))
		return -EINVAL;
	if (!slash)
		return dir_opendir_fd(rootfd, "");
	dir = strndup(rel, (size_t)(slash - rel));
	if (!dir)
		return -ENOMEM;
	fd = dir_opendir_fd(rootfd, dir);
	free(dir);
	return fd;
}

int dir_unlink(int rootfd, const char *rel)
{
	const char *base;
	int fd = open_parent(rootfd, rel, &base), rc = 0;

	if (fd < 0)
		return fd;
	if (unlinkat(fd, base, 0))
		rc = -errno;
	close(fd);
	return rc;
}

bool dir_exists(int rootfd, const char *rel)
{
	const char *base;
	struct stat st;
	int fd = open_parent(rootfd, rel, &base);
	bool ok;

	if (fd < 0)
		return false;
	ok = fstatat(fd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
	close(fd);
	return ok;
}

int dir_rename(int rootfd, const char *from, const char *to, bool noreplace)
{
	const char *bf, *bt;
	int ff = open_parent(rootfd, from, &bf), tf, rc = 0;

	if (ff < 0)
		return ff;
	tf = open_parent(rootfd, to, &bt);
	if (tf < 0) {
		close(ff);
		return tf;
	}
	if (renameat2(ff, bf, tf, bt, noreplace ? RENAME_NOREPLACE : 0)) {
		rc = -errno;
		if (noreplace && (errno == EINVAL || errno == ENOSYS)) {
			/* No RENAME_NOREPLACE here (NFS): check, then rename; we hold the storage lock. */
			struct stat st;

			rc = fstatat(tf, bt, &st, AT_SYMLINK_NOFOLLOW) == 0 ? -EEXIST
			   : renameat(ff, bf, tf, bt) ? -errno : 0;
		}
	}
	if (rc == 0 && fsync(tf) && errno != EINVAL)
		rc = -errno;
	close(ff);
	close(tf);
	return rc;
}

/* ---- small durable files ---- */

static char *parent_of(const char *rel)
{
	const char *slash = strrchr(rel, '/');

	return slash ? strndup(rel, (size_t)(slash - rel)) : strdup(".");
}

int dir_fsync_parent(int rootfd, const char *rel)
{
	char *p = parent_of(rel);
	int fd, rc = 0;

	if (!p)
		return -ENOMEM;
	fd = dir_opendir_fd(rootfd, p);
	free(p);
	if (fd < 0)
		return fd;
	if (fsync(fd) && errno != EINVAL)
		rc = -errno;
	close(fd);
	return rc;
}

int dir_write_file_atomic(int rootfd, const char *rel, const char *data, size_t len)
{
	char *tmp = NULL;
	int fd, rc = 0;

	if (asprintf(&tmp, "%s.part", rel) < 0)
		return -ENOMEM;
	fd = dir_openat(rootfd, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		free(tmp);
		return fd;
	}
	while (len && rc == 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			rc = n < 0 ? -errno : -EIO;
		else {
			data += n;
			len -= (size_t)n;
		}
	}
	if (rc == 0 && fsync(fd))
		rc = -errno;
	close(fd);
	if (rc == 0)
		rc = dir_rename(rootfd, tmp, rel, false);
	if (rc)
		dir_unlink(rootfd, tmp);
	free(tmp);
	return rc;
}

int dir_read_small(int rootfd, const char *rel, char **out)
{
	char *buf;
	ssize_t n, got = 0;
	struct stat st;
	int fd = dir_open_regular(rootfd, rel, O_RDONLY, &st);

	*out = NULL;
	if (fd < 0)
		return fd;
	buf = malloc(65536);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while ((n = read(fd, buf + got, 65535 - (size_t)got)) > 0)
		got += n;
	close(fd);
	if (n < 0) {
		free(buf);
		return -EIO;
	}
	buf[got] = 0;
	*out = buf;
	return 0;
}
