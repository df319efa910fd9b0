/*
 * lv_io: read access to an LV as a layer_io. Through /dev/<vg>/<lv> when
 * device-mapper shows it, else straight from the PV extents the scan found
 * (the PV fds belong to the lvm_vg snapshot, which the io keeps alive).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "lvm/lvm.h"

struct lv_io {
	struct layer_io io;
	struct lvm_vg *vg;
	const struct lvm_lv *lv;
	int devfd;            /* /dev/<vg>/<lv>, or -1 to use the extents */
	char name[300];
};

/* Segment holding off (segments tile the LV in order). */
static const struct lvm_segment *seg_at(const struct lvm_lv *lv, uint64_t off)
{
	int lo = 0, hi = lv->nsegs - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		const struct lvm_segment *s = &lv->segs[mid];

		if (off < s->lv_off)
			hi = mid - 1;
		else if (off - s->lv_off >= s->len)
			lo = mid + 1;
		else
			return s;
	}
	return NULL;
}

static int map(struct lv_io *l, uint64_t off, uint64_t *len, int *fd, uint64_t *fd_off)
{
	const struct lvm_segment *s;

	if (off >= l->io.size)
		return -EIO;
	if (*len > l->io.size - off)
		*len = l->io.size - off;
	if (l->devfd >= 0) {
		*fd = l->devfd;
		*fd_off = off;
		return 0;
	}
	s = seg_at(l->lv, off);
	if (!s)
		return -EIO;
	if (*len > s->len - (off - s->lv_off))
		*len = s->len - (off - s->lv_off);
	*fd = l->vg->pvs[s->pv].fd;
	*fd_off = s->pv_off + (off - s->lv_off);
	return 0;
}

static int lvio_map_fd(struct layer_io *io, uint64_t off, uint64_t *len, int *fd, uint64_t *fd_off)
{
	return map((struct lv_io *)io, off, len, fd, fd_off);
}

static int lvio_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	struct lv_io *l = (struct lv_io *)io;

	if (off > io->size || len > io->size - off)
		return -EIO;
	while (len) {
		uint64_t run = len, fd_off;
		int fd, rc = map(l, off, &run, &fd, &fd_off);
		ssize_t n;

		if (rc)
			return rc;
		n = pread(fd, buf, run, fd_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf = (char *)buf + n;
		off += n;
		len -= n;
	}
	return 0;
}

static void lvio_close(struct layer_io *io)
{
	struct lv_io *l = (struct lv_io *)io;

	if (l->devfd >= 0)
		close(l->devfd);
	lvm_vg_put(l->vg);
	free(l);
}

static const struct layer_io_ops lv_io_ops = {
	.pread = lvio_pread,
	.map_fd = lvio_map_fd,
	.close = lvio_close,
};

int lvm_lv_open(struct lvm_vg *vg, const struct lvm_lv *lv, struct layer_io **out)
{
	struct lv_io *l = calloc(1, sizeof(*l));
	char dev[600];
	struct stat st;

	if (!l)
		return -ENOMEM;
	snprintf(l->name, sizeof(l->name), "%s/%s", vg->name, lv->name);
	l->io.ops = &lv_io_ops;
	l->io.size = lv->size;
	l->io.name = l->name;
	l->io.id = lv->uuid;
	l->io.ctime = lv->ctime;
	l->vg = vg;
	l->lv = lv;
	l->devfd = -1;
	lvm_vg_get(vg);
	snprintf(dev, sizeof(dev), "/dev/%s/%s", vg->name, lv->name);
	/* Whatever sits at /dev/<vg>/<lv> is only used if it is a block
	 * device: stat before opening (a FIFO there would block the open),
	 * O_NONBLOCK in case it was swapped, fstat of what was opened. */
	if (stat(dev, &st) == 0 && S_ISBLK(st.st_mode)) {
		l->devfd = open(dev, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (l->devfd >= 0 && (fstat(l->devfd, &st) || !S_ISBLK(st.st_mode))) {
			close(l->devfd);
			l->devfd = -1;
		}
		if (l->devfd >= 0)
			(void)fcntl(l->devfd, F_SETFL, fcntl(l->devfd, F_GETFL) & ~O_NONBLOCK);
	}
	if (l->devfd < 0 && !lv->readable) {
		vlog(LOG_ERR, "%s: not readable without device-mapper (not linear, or a PV is missing)",
		     l->name);
		lvio_close(&l->io);
		return -EIO;
	}
	*out = &l->io;
	return 0;
}
