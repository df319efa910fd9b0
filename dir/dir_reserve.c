/*
 * dir_reserve: see dir_reserve.h. Holes are found with SEEK_HOLE/SEEK_DATA
 * (page or block granular, as the filesystem keeps them), so what is
 * punched on undo is exactly what fallocate filled.
 */
#include "dir/dir_reserve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

int dir_reserve_begin(struct dir_reserve *v, int fd)
{
	struct stat st;

	memset(v, 0, sizeof(*v));
	v->fd = -1;
	if (fd < 0 || fstat(fd, &st))
		return fd < 0 ? -EINVAL : -errno;
	v->fd = fd;
	v->orig_size = (uint64_t)st.st_size;
	return 0;
}

static int record(struct dir_reserve *v, uint64_t off, uint64_t len)
{
	if (v->n && v->off[v->n - 1] + v->len[v->n - 1] == off) {
		v->len[v->n - 1] += len;
		return 0;
	}
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 16;
		uint64_t *o = realloc(v->off, cap * sizeof(*o)), *l;

		if (!o)
			return -ENOMEM;
		v->off = o;
		l = realloc(v->len, cap * sizeof(*l));
		if (!l)
			return -ENOMEM;
		v->len = l;
		v->cap = cap;
	}
	v->off[v->n] = off;
	v->len[v->n++] = len;
	return 0;
}

/* Fill the hole [off, off + len) (or count it), and record it. */
static int fill(struct dir_reserve *v, uint64_t off, uint64_t len)
{
	if (!v->counting && fallocate(v->fd, 0, (off_t)off, (off_t)len)) {
		if (errno != EOPNOTSUPP)
			return -errno;
		v->counting = true;
	}
	if (v->counting) {
		v->counted += len;
		return 0;
	}
	return record(v, off, len);
}

int dir_reserve_range(struct dir_reserve *v, uint64_t off, uint64_t len)
{
	uint64_t end = off + len, pos = off;

	if (v->fd < 0)
		return -EINVAL;
	while (pos < end) {
		off_t h = lseek(v->fd, (off_t)pos, SEEK_HOLE), d;
		int rc;

		if (h < 0 && errno != ENXIO)
			return -errno;
		if (h < 0)
			h = (off_t)pos;            /* at or past the end of the file: all hole */
		if ((uint64_t)h >= end)
			break;
		d = lseek(v->fd, h, SEEK_DATA);
		if (d < 0 && errno != ENXIO)
			return -errno;
		if (d < 0 || (uint64_t)d > end)
			d = (off_t)end;
		if ((rc = fill(v, (uint64_t)h, (uint64_t)(d - h))))
			return rc;
		pos = (uint64_t)d;
	}
	return 0;
}

int dir_reserve_check(struct dir_reserve *v)
{
	struct statvfs sv;

	if (!v->counting || v->fd < 0)
		return 0;
	if (fstatvfs(v->fd, &sv))
		return -errno;
	return (uint64_t)sv.f_bavail * sv.f_frsize < v->counted ? -ENOSPC : 0;
}

void dir_reserve_undo(struct dir_reserve *v)
{
	struct stat st;

	if (v->fd < 0)
		return;
	if (fstat(v->fd, &st) == 0 && (uint64_t)st.st_size > v->orig_size)
		(void)!ftruncate(v->fd, (off_t)v->orig_size);
	for (size_t i = 0; i < v->n; i++)
		if (v->off[i] < v->orig_size)
			fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)v->off[i],
				  (off_t)v->len[i]);
	v->n = 0;
}

void dir_reserve_trim(struct dir_reserve *v, uint64_t end)
{
	struct stat st;

	if (v->fd < 0)
		return;
	if (end < v->orig_size)
		end = v->orig_size;
	if (fstat(v->fd, &st) == 0 && (uint64_t)st.st_size > end)
		(void)!ftruncate(v->fd, (off_t)end);
}

void dir_reserve_free(struct dir_reserve *v)
{
	free(v->off);
	free(v->len);
	memset(v, 0, sizeof(*v));
	v->fd = -1;
}
