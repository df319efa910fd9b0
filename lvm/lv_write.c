/*
 * lv_write: a writable layer_io over one LV, for the snapshot operations.
 * Reads go through the same mapping so a writer can read back what it
 * wrote. Each segment maps [lv_off, lv_off + len) to a PV device opened
 * O_RDWR (or the whole LV to /dev/<vg>/<lv> when device-mapper shows it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "lvm/lvm_change.h"

struct lv_write {
	struct layer_io io;
	struct lvm_vg *vg;
	int nsegs;
	struct { uint64_t lv_off, len, dev_off; int fd, dfd; } *segs;
	int nfds;
	int *fds;            /* distinct devices, for flush */
	int *dfds;           /* the same opened O_DIRECT, or -1 */
	char name[300];
};

static int rw_find(struct lv_write *w, uint64_t off)
{
	for (int i = 0; i < w->nsegs; i++)
		if (off >= w->segs[i].lv_off && off - w->segs[i].lv_off < w->segs[i].len)
			return i;
	return -1;
}

/*
 * Whole aligned blocks (a merge's data runs) are written O_DIRECT: past the
 * page cache, which on a block device would take a copy and a fresh page
 * per 4 KiB only to be written back at the next flush. Table entries and
 * other small writes stay buffered; the kernel keeps the two coherent.
 */
#define DIRECT_ALIGN 4096

static bool direct_ok(const void *buf, uint64_t len, uint64_t off)
{
	return len >= 65536 && !(((uintptr_t)buf | len | off) % DIRECT_ALIGN);
}

/* Apply fn to [off, off + len) split along segments. */
static int rw_io(struct lv_write *w, void *buf, size_t len, uint64_t off, bool write)
{
	if (off > w->io.size || len > w->io.size - off)
		return -EIO;
	while (len) {
		int s = rw_find(w, off);
		uint64_t in, chunk;
		ssize_t n;

		if (s < 0)
			return -EIO;
		in = off - w->segs[s].lv_off;
		chunk = w->segs[s].len - in < len ? w->segs[s].len - in : len;
		if (write && w->segs[s].dfd >= 0 && direct_ok(buf, chunk, w->segs[s].dev_off + in))
			n = pwrite(w->segs[s].dfd, buf, chunk, w->segs[s].dev_off + in);
		else
			n = write ? pwrite(w->segs[s].fd, buf, chunk, w->segs[s].dev_off + in)
				  : pread(w->segs[s].fd, buf, chunk, w->segs[s].dev_off + in);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			vlog(LOG_ERR, "%s: %s at %llu: %s", w->name, write ? "write" : "read",
			     (unsigned long long)off, strerror(err));
			return -err;
		}
		buf = (char *)buf + n;
		off += n;
		len -= n;
	}
	return 0;
}

static int rw_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	return rw_io((struct lv_write *)io, buf, len, off, false);
}

static int rw_pwrite(struct layer_io *io, const void *buf, size_t len, uint64_t off)
{
	return rw_io((struct lv_write *)io, (void *)buf, len, off, true);
}

static int rw_flush(struct layer_io *io)
{
	struct lv_write *w = (struct lv_write *)io;

	for (int i = 0; i < w->nfds; i++) {
		if (fdatasync(w->fds[i]) < 0) {
			vlog(LOG_ERR, "%s: flush: %s", w->name, strerror(errno));
			return -errno;
		}
	}
	return 0;
}

static void rw_close(struct layer_io *io)
{
	struct lv_write *w = (struct lv_write *)io;

	for (int i = 0; i < w->nfds; i++) {
		close(w->fds[i]);
		if (w->dfds[i] >= 0)
			close(w->dfds[i]);
	}
	free(w->fds);
	free(w->dfds);
	free(w->segs);
	lvm_vg_put(w->vg);
	free(w);
}

static const struct layer_io_ops lv_write_ops = {
	.pread = rw_pread,
	.close = rw_close,
	.pwrite = rw_pwrite,
	.flush = rw_flush,
};

static int add_fd(struct lv_write *w, const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		vlog(LOG_ERR, "%s: open %s for writing: %s", w->name, path, strerror(errno));
		return -errno;
	}
	w->dfds[w->nfds] = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
	w->fds[w->nfds++] = fd;
	return fd;
}

int lvm_lv_open_rw(struct lvm_vg *vg, const struct lvm_lv *lv, struct layer_io **out)
{
	struct lv_write *w = calloc(1, sizeof(*w));
	char dev[600];
	struct stat st;
	int rc = -ENOMEM;

	if (!w)
		return -ENOMEM;
	snprintf(w->name, sizeof(w->name), "%s/%s", vg->name, lv->name);
	w->io.ops = &lv_write_ops;
	w->io.size = lv->size;
	w->io.name = w->name;
	w->io.id = lv->uuid;
	w->io.ctime = lv->ctime;
	w->vg = vg;
	lvm_vg_get(vg);
	w->segs = calloc(lv->nsegs + 1, sizeof(*w->segs));
	w->fds = calloc(lv->nsegs + 1, sizeof(*w->fds));
	w->dfds = calloc(lv->nsegs + 1, sizeof(*w->dfds));
	if (!w->segs || !w->fds || !w->dfds)
		goto fail;
	snprintf(dev, sizeof(dev), "/dev/%s/%s", vg->name, lv->name);
	if (stat(dev, &st) == 0 && S_ISBLK(st.st_mode)) {
		rc = add_fd(w, dev);
		if (rc < 0)
			goto fail;
		w->segs[0].fd = rc;
		w->segs[0].dfd = w->dfds[w->nfds - 1];
		w->segs[0].len = lv->size;
		w->nsegs = 1;
	} else {
		rc = -EIO;
		if (!lv->readable) {
			vlog(LOG_ERR, "%s: not a linear LV on present PVs: cannot write it", w->name);
			goto fail;
		}
		for (int i = 0; i < lv->nsegs; i++) {
			const struct lvm_segment *s = &lv->segs[i];
			int fd = -1, dfd = -1;

			for (int j = 0; j < i && fd < 0; j++)
				if (lv->segs[j].pv == s->pv) {
					fd = w->segs[j].fd;
					dfd = w->segs[j].dfd;
				}
			if (fd < 0) {
				if ((fd = add_fd(w, vg->pvs[s->pv].path)) < 0) {
					rc = fd;
					goto fail;
				}
				dfd = w->dfds[w->nfds - 1];
			}
			w->segs[i].fd = fd;
			w->segs[i].dfd = dfd;
			w->segs[i].lv_off = s->lv_off;
			w->segs[i].len = s->len;
			w->segs[i].dev_off = s->pv_off;
			w->nsegs++;
		}
	}
	*out = &w->io;
	return 0;
fail:
	rw_close(&w->io);
	return rc;
}
