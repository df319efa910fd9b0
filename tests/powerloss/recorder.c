/*
 * recorder: a passthrough FUSE file system that logs, in order, every
 * operation that changes what a power cut could keep, with its data.
 *
 *   recorder BACKING_DIR MOUNTPOINT LOGFILE [fuse options]
 *
 * It serves BACKING_DIR at MOUNTPOINT single-threaded (one request at a
 * time, so the log order is the order the backing file system saw) and
 * without the FUSE writeback cache (every write(2) reaches it as it is
 * made, in order). Each record is appended with one write(2) to LOGFILE
 * before the request is answered, so a reader that sees the caller return
 * sees its records.
 *
 * Records identify files by the backing inode number (st_ino in the
 * backing file system), names by their path relative to BACKING_DIR, so
 * the replayer can follow a file across renames and links:
 *
 *   struct rec { u32 magic 'PLR1'; u32 type; u64 ino; u64 off; u64 len;
 *                u32 flags; u16 name1_len; u16 name2_len; }
 *   then name1, name2, and for WRITE len bytes of data.
 *
 * WRITE ino off len data; TRUNC ino len; FALLOC ino off len flags=mode;
 * FSYNC ino flags=datasync; FSYNCDIR ino(dir) name1=dir path;
 * CREATE ino name1 flags=mode; MKDIR ino name1; LINK ino name1(old) name2(new);
 * UNLINK ino name1; RMDIR ino name1; RENAME ino name1 name2 flags=renameat2
 * flags, off = inode replaced at name2 (0: none); SYMLINK ino name1 name2=target.
 * Only operations that succeeded are logged.
 */
#define FUSE_USE_VERSION 31
#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

enum { R_WRITE = 1, R_TRUNC, R_FALLOC, R_FSYNC, R_FSYNCDIR, R_CREATE, R_MKDIR, R_LINK,
       R_UNLINK, R_RMDIR, R_RENAME, R_SYMLINK };

struct rec {
	uint32_t magic, type;
	uint64_t ino, off, len;
	uint32_t flags;
	uint16_t n1, n2;
} __attribute__((packed));

static int rootfd = -1, logfd = -1;

/* FUSE paths start with '/'; the backing relative path is the rest, or "." */
static const char *rel(const char *path)
{
	return path[1] ? path + 1 : ".";
}

static uint64_t ino_of(const char *path)
{
	struct stat st;

	return fstatat(rootfd, rel(path), &st, AT_SYMLINK_NOFOLLOW) ? 0 : (uint64_t)st.st_ino;
}

static uint64_t ino_fd(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? 0 : (uint64_t)st.st_ino;
}

static void log_rec(uint32_t type, uint64_t ino, uint64_t off, uint64_t len, uint32_t flags,
		    const char *a, const char *b, const void *data)
{
	size_t n1 = a ? strlen(a) : 0, n2 = b ? strlen(b) : 0;
	size_t dl = type == R_WRITE ? len : 0, tot = sizeof(struct rec) + n1 + n2 + dl;
	char *buf = malloc(tot), *p;
	struct rec r = { 0x31524c50, type, ino, off, len, flags, (uint16_t)n1, (uint16_t)n2 };

	if (!buf) {
		fprintf(stderr, "recorder: out of memory, log incomplete\n");
		abort();
	}
	p = buf;
	memcpy(p, &r, sizeof(r));
	p += sizeof(r);
	memcpy(p, a, n1);
	p += n1;
	memcpy(p, b, n2);
	p += n2;
	if (dl)
		memcpy(p, data, dl);
	for (size_t done = 0; done < tot;) {
		ssize_t w = write(logfd, buf + done, tot - done);

		if (w <= 0) {
			perror("recorder: log write");
			abort();
		}
		done += (size_t)w;
	}
	free(buf);
}

static void *rec_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	cfg->hard_remove = 1;     /* an unlink is an unlink, never a rename to .fuse_hidden */
	cfg->entry_timeout = cfg->attr_timeout = cfg->negative_timeout = 0;
	return NULL;
}

static int rec_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	if (fi)
		return fstat((int)fi->fh, st) ? -errno : 0;
	return fstatat(rootfd, rel(path), st, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
}

static int rec_readlink(const char *path, char *buf, size_t size)
{
	ssize_t n = readlinkat(rootfd, rel(path), buf, size - 1);

	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

static int rec_opendir(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(rootfd, rel(path), O_RDONLY | O_DIRECTORY);

	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int rec_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	int fd = openat((int)fi->fh, ".", O_RDONLY | O_DIRECTORY);
	DIR *d;
	struct dirent *e;

	(void)path; (void)off; (void)flags;
	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	while ((e = readdir(d))) {
		struct stat st = { .st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type) };

		if (fill(buf, e->d_name, &st, 0, 0))
			break;
	}
	closedir(d);
	return 0;
}

static int rec_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)fi->fh);
	return 0;
}

static int rec_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
	if (datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh))
		return -errno;
	log_rec(R_FSYNCDIR, ino_fd((int)fi->fh), 0, 0, 0, rel(path), NULL, NULL);
	return 0;
}

static int rec_mknod(const char *path, mode_t mode, dev_t rdev)
{
	if (mknodat(rootfd, rel(path), mode, rdev))
		return -errno;
	log_rec(R_CREATE, ino_of(path), 0, 0, mode, rel(path), NULL, NULL);
	return 0;
}

static int rec_mkdir(const char *path, mode_t mode)
{
	if (mkdirat(rootfd, rel(path), mode))
		return -errno;
	log_rec(R_MKDIR, ino_of(path), 0, 0, mode, rel(path), NULL, NULL);
	return 0;
}

static int rec_unlink(const char *path)
{
	uint64_t ino = ino_of(path);

	if (unlinkat(rootfd, rel(path), 0))
		return -errno;
	log_rec(R_UNLINK, ino, 0, 0, 0, rel(path), NULL, NULL);
	return 0;
}

static int rec_rmdir(const char *path)
{
	uint64_t ino = ino_of(path);

	if (unlinkat(rootfd, rel(path), AT_REMOVEDIR))
		return -errno;
	log_rec(R_RMDIR, ino, 0, 0, 0, rel(path), NULL, NULL);
	return 0;
}

static int rec_symlink(const char *target, const char *path)
{
	if (symlinkat(target, rootfd, rel(path)))
		return -errno;
	log_rec(R_SYMLINK, ino_of(path), 0, 0, 0, rel(path), target, NULL);
	return 0;
}

static int rec_rename(const char *from, const char *to, unsigned int flags)
{
	uint64_t ino = ino_of(from), old = ino_of(to);

	if (renameat2(rootfd, rel(from), rootfd, rel(to), flags))
		return -errno;
	log_rec(R_RENAME, ino, old, 0, flags, rel(from), rel(to), NULL);
	return 0;
}

static int rec_link(const char *from, const char *to)
{
	if (linkat(rootfd, rel(from), rootfd, rel(to), 0))
		return -errno;
	log_rec(R_LINK, ino_of(to), 0, 0, 0, rel(from), rel(to), NULL);
	return 0;
}

static int rec_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (fi)
		return fchmod((int)fi->fh, mode) ? -errno : 0;
	return fchmodat(rootfd, rel(path), mode, 0) ? -errno : 0;
}

static int rec_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	if (fi)
		return fchown((int)fi->fh, uid, gid) ? -errno : 0;
	return fchownat(rootfd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
}

static int rec_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	int fd = fi ? (int)fi->fh : openat(rootfd, rel(path), O_WRONLY);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size))
		rc = -errno;
	else
		log_rec(R_TRUNC, ino_fd(fd), 0, (uint64_t)size, 0, NULL, NULL, NULL);
	if (!fi)
		close(fd);
	return rc;
}

static int rec_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	if (fi)
		return futimens((int)fi->fh, tv) ? -errno : 0;
	return utimensat(rootfd, rel(path), tv, AT_SYMLINK_NOFOLLOW) ? -errno : 0;
}

static int rec_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int fd = openat(rootfd, rel(path), (fi->flags & ~O_DIRECT) | O_CREAT, mode);
	struct stat st;

	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	fstat(fd, &st);
	log_rec(R_CREATE, (uint64_t)st.st_ino, 0, 0, mode, rel(path), NULL, NULL);
	if (fi->flags & O_TRUNC)
		log_rec(R_TRUNC, (uint64_t)st.st_ino, 0, 0, 0, NULL, NULL, NULL);
	return 0;
}

static int rec_open(const char *path, struct fuse_file_info *fi)
{
	/* O_DIRECT is the caller's business with the kernel; the backing fd is buffered */
	int fd = openat(rootfd, rel(path), fi->flags & ~(O_DIRECT | O_CREAT | O_EXCL));

	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	if (fi->flags & O_TRUNC)
		log_rec(R_TRUNC, ino_fd(fd), 0, 0, 0, NULL, NULL, NULL);
	return 0;
}

static int rec_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n = pread((int)fi->fh, buf, size, off);

	(void)path;
	return n < 0 ? -errno : (int)n;
}

static int rec_write(const char *path, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	ssize_t n = pwrite((int)fi->fh, buf, size, off);

	(void)path;
	if (n < 0)
		return -errno;
	log_rec(R_WRITE, ino_fd((int)fi->fh), (uint64_t)off, (uint64_t)n, 0, NULL, NULL, buf);
	return (int)n;
}

static int rec_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return fstatvfs(rootfd, st) ? -errno : 0;
}

static int rec_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)fi->fh);
	return 0;
}

static int rec_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	if (datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh))
		return -errno;
	log_rec(R_FSYNC, ino_fd((int)fi->fh), 0, 0, (uint32_t)datasync, NULL, NULL, NULL);
	return 0;
}

static int rec_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	(void)path;
	if (fallocate((int)fi->fh, mode, off, len))
		return -errno;
	log_rec(R_FALLOC, ino_fd((int)fi->fh), (uint64_t)off, (uint64_t)len, (uint32_t)mode, NULL, NULL,
		NULL);
	return 0;
}

static off_t rec_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
	off_t r = lseek((int)fi->fh, off, whence);

	(void)path;
	return r < 0 ? -errno : r;
}

static const struct fuse_operations rec_ops = {
	.init = rec_init, .getattr = rec_getattr, .readlink = rec_readlink,
	.opendir = rec_opendir, .readdir = rec_readdir, .releasedir = rec_releasedir,
	.fsyncdir = rec_fsyncdir, .mknod = rec_mknod, .mkdir = rec_mkdir, .unlink = rec_unlink,
	.rmdir = rec_rmdir, .symlink = rec_symlink, .rename = rec_rename, .link = rec_link,
	.chmod = rec_chmod, .chown = rec_chown, .truncate = rec_truncate, .utimens = rec_utimens,
	.create = rec_create, .open = rec_open, .read = rec_read, .write = rec_write,
	.statfs = rec_statfs, .release = rec_release, .fsync = rec_fsync,
	.fallocate = rec_fallocate, .lseek = rec_lseek,
};

int main(int argc, char **argv)
{
	char *fargv[16];
	int fargc = 0;

	if (argc < 4 || argc > 10) {
		fprintf(stderr, "usage: recorder BACKING_DIR MOUNTPOINT LOGFILE [fuse options]\n");
		return 2;
	}
	rootfd = open(argv[1], O_RDONLY | O_DIRECTORY);
	logfd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0600);
	if (rootfd < 0 || logfd < 0) {
		perror("recorder: open");
		return 1;
	}
	umask(0);
	fargv[fargc++] = argv[0];
	fargv[fargc++] = argv[2];
	fargv[fargc++] = "-f";
	fargv[fargc++] = "-s";
	fargv[fargc++] = "-o";
	fargv[fargc++] = "fsname=recorder,subtype=recorder,default_permissions";
	for (int i = 4; i < argc; i++)
		fargv[fargc++] = argv[i];
	fargv[fargc] = NULL;
	return fuse_main(fargc, fargv, &rec_ops, NULL);
}
