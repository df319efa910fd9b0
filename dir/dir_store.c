/*
 * dir_store: the store operations of a directory store. See dir_store.h.
 *
 * A listing is built from one layout scan (layouts.c): every volume's top
 * file is probed once; views are "current", one per "snap-<snap>-<vol>"
 * layer of a Proxmox volume chain (oldest first), and one per internal
 * snapshot of the top file. Changes are noticed through inotify on every
 * directory the scan looked at; on network filesystems (no inotify events
 * for other clients' changes) through a signature of those directories and
 * the volumes' files, recomputed by changed().
 */
#include "dir/dir_store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "chain/qcow2_snapshot.h"
#include "common/io_gate.h"
#include "common/log.h"
#include "common/log_cause.h"
#include "store/chain_reader.h"

#define NFS_MAGIC   0x6969
#define SMB_MAGIC   0x517B
#define CIFS_MAGIC  0xFF534D42
#define SMB2_MAGIC  0xFE534D42
#define CEPH_MAGIC  0x00c36400
#define FUSE_MAGIC  0x65735546
#define V9FS_MAGIC  0x01021997

struct lpriv {
	uint64_t sig;               /* network filesystems: what changed() compares */
	int ndirs;
	char **dirs;
	struct dir_layer_list layers; /* the files the views were built from (dir_layers.c) */
};

/* A snapshot view built on layers that were replaced is another file: "~r<epochs>". */
static char *with_epoch(char *ident, unsigned epoch)
{
	char *out = NULL;

	if (!ident || !epoch)
		return ident;
	if (asprintf(&out, "%s~r%u", ident, epoch) < 0)
		out = NULL;
	free(ident);
	return out;
}

/* ---- listings ---- */

static void free_view(struct store_view *v)
{
	struct dir_wpriv *w = v->priv;

	free((char *)v->name);
	free((char *)v->ident);
	if (w) {
		free(w->rel);
		free(w->snap);
		free(w);
	}
}

static void free_volume(struct store_volume *vol)
{
	struct dir_vpriv *vp = vol->priv;

	for (int i = 0; i < vol->nviews; i++)
		free_view(&vol->views[i]);
	free(vol->views);
	free((char *)vol->name);
	if (vp) {
		free(vp->rel);
		free(vp->dir);
		free(vp);
	}
}

static void listing_free(struct store *s, struct store_listing *l)
{
	struct lpriv *lp;

	(void)s;
	if (!l)
		return;
	for (int i = 0; i < l->nvols; i++)
		free_volume(&l->vols[i]);
	free(l->vols);
	lp = l->priv;
	if (lp) {
		for (int i = 0; i < lp->ndirs; i++)
			free(lp->dirs[i]);
		free(lp->dirs);
		dir_layers_free(&lp->layers);
		free(lp);
	}
	free(l);
}

static int add_view(struct store_volume *vol, const char *name, char *ident, uint64_t size,
		    int64_t mtime, uint64_t used, bool snapshot, const char *rel,
		    enum chain_layer_format fmt, const char *isnap)
{
	struct store_view *v = realloc(vol->views, (size_t)(vol->nviews + 1) * sizeof(*v));
	struct dir_wpriv *w;

	if (!v) {
		free(ident);
		return -ENOMEM;
	}
	vol->views = v;
	v = &v[vol->nviews];
	memset(v, 0, sizeof(*v));
	w = calloc(1, sizeof(*w));
	v->name = strdup(name);
	v->ident = ident;
	v->priv = w;
	if (!w || !v->name || !ident || !(w->rel = strdup(rel))) {
		free_view(v);
		return -ENOMEM;
	}
	w->fmt = fmt;
	if (isnap) {
		w->is_isnap = true;
		if (!(w->snap = strdup(isnap))) {
			free_view(v);
			return -ENOMEM;
		}
	}
	v->size = size;
	v->mtime = mtime;
	v->used = used;
	v->snapshot = snapshot;
	vol->nviews++;
	return 0;
}

static bool has_view(const struct store_volume *vol, const char *name)
{
	for (int i = 0; i < vol->nviews; i++)
		if (!strcmp(vol->views[i].name, name))
			return true;
	return false;
}

char *dir_part(const char *rel)
{
	const char *slash = strrchr(rel, '/');

	return slash ? strndup(rel, (size_t)(slash - rel)) : strdup("");
}

static uint64_t file_used(struct dir_store_priv *p, const char *rel, int64_t *mtime, int64_t *btime)
{
	struct stat st;
	int fd = dir_openat(p->rootfd, rel, O_PATH, 0);   /* stat only: nothing is opened */

	if (fd < 0)
		return 0;
	if (fstat(fd, &st)) {
		close(fd);
		return 0;
	}
	if (mtime)
		*mtime = st.st_mtime;
	if (btime)
		*btime = dir_birth_time(fd);
	close(fd);
	return (uint64_t)st.st_blocks * 512;
}

/* The nanoseconds of dir_birth_time(rel) (btime, else mtime), 0 if unknown. */
static int32_t birth_nsec(struct dir_store_priv *p, const char *rel)
{
	struct statx stx;
	int fd = dir_openat(p->rootfd, rel, O_RDONLY | O_NONBLOCK, 0), rc;

	if (fd < 0)
		return 0;
	rc = statx(fd, "", AT_EMPTY_PATH, STATX_BTIME | STATX_MTIME, &stx);
	close(fd);
	if (rc)
		return 0;
	return (int32_t)((stx.stx_mask & STATX_BTIME) ? stx.stx_btime.tv_nsec : stx.stx_mtime.tv_nsec);
}

/* The snap-<snap>-<vol> layers below a Proxmox volume, oldest first. */
static int pve_chain_views(struct store *s, struct store_volume *vol, const struct dir_cand *c,
			   struct lpriv *lp, unsigned *epochs)
{
	struct dir_store_priv *p = s->priv;
	char *dir = dir_part(c->rel), *cur = strdup(c->rel);
	struct { char *snap, *rel, *above; uint64_t vsize; } found[DIR_MAX_SNAPSHOTS];
	int n = 0, rc = 0;
	size_t dl;

	if (!dir || !cur) {
		free(dir);
		free(cur);
		return -ENOMEM;
	}
	dl = strlen(dir);
	while (n < DIR_MAX_SNAPSHOTS) {
		char *brel = NULL, *base;
		enum chain_layer_format fmt;
		uint64_t vsize;
		size_t bl, vl = strlen(c->name);
		bool loop = false;

		if (dir_probe_backing(s, cur, &brel, NULL, &fmt, &vsize) || !brel)
			break;
		base = strrchr(brel, '/') ? strrchr(brel, '/') + 1 : brel;
		bl = strlen(base);
		if ((size_t)(base - brel) != (dl ? dl + 1 : 0) || strncmp(brel, dir, dl) ||
		    strncmp(base, "snap-", 5) || bl <= 5 + vl + 1 || strcmp(base + bl - vl, c->name) ||
		    base[bl - vl - 1] != '-') {
			free(brel);
			break;
		}
		for (int i = 0; i < n; i++)
			loop |= !strcmp(found[i].rel, brel);
		if (loop) {
			free(brel);
			break;
		}
		found[n].snap = strndup(base + 5, bl - vl - 6);
		found[n].rel = brel;
		found[n].above = cur;
		cur = strdup(brel);
		if (!found[n].snap || !cur) {
			rc = -ENOMEM;
			free(found[n].snap);
			free(found[n].rel);
			free(found[n].above);
			break;
		}
		{
			char *tmp = NULL;
			int prc = dir_probe_backing(s, brel, &tmp, NULL, &fmt, &vsize);

			free(tmp);
			if (prc) {
				/* A snapshot file deleted (or that is no file): its view
				 * goes; current's chain reads EIO where it needed it. */
				free(found[n].snap);
				free(found[n].rel);
				free(found[n].above);
				break;
			}
			found[n].vsize = vsize;
		}
		n++;
	}
	free(cur);
	*epochs = 0;
	for (int i = n - 1; i >= 0; i--) {
		char key[1200];

		/* View i reads found[i] and every older layer below it. */
		*epochs += dir_layer_note(s, &lp->layers, found[i].rel, false, false);
		if (rc == 0 && (!store_view_name_ok(found[i].snap) || has_view(vol, found[i].snap))) {
			snprintf(key, sizeof(key), "badsnap:%s", found[i].rel);
			dir_log_once(s, key, LOG_WARNING, "%s/%s: not a usable snapshot name: not shown",
				     s->name, found[i].rel);
		} else if (rc == 0) {
			int64_t t = dir_snaptime_get(s, dir, c->name, found[i].snap), btime = 0;
			uint64_t used = file_used(p, found[i].rel, NULL, NULL);
			char *ident = NULL;

			if (t <= 0) {
				file_used(p, found[i].above, NULL, &btime);
				t = btime * 1000000000;
			}
			if (asprintf(&ident, "ext:%s@%s@%" PRId64, c->rel, found[i].snap, t) < 0)
				ident = NULL;
			ident = with_epoch(ident, *epochs);
			rc = add_view(vol, found[i].snap, ident, found[i].vsize, t / 1000000000, used, true,
				      found[i].rel, CHAIN_FMT_QCOW2, NULL);
			if (rc == 0)
				vol->views[vol->nviews - 1].mtime_nsec =
					btime ? birth_nsec(p, found[i].above) : (int32_t)(t % 1000000000);
		}
		free(found[i].snap);
		free(found[i].rel);
		free(found[i].above);
	}
	free(dir);
	return rc;
}

static int isnap_views(struct store *s, struct store_volume *vol, const struct dir_cand *c,
		       struct layer_io *io, unsigned epochs)
{
	struct qcow2_snapshot_list sl;
	int rc = qcow2_snapshot_list(io, &sl);
	char key[1200];

	if (rc) {
		snprintf(key, sizeof(key), "isnaptab:%s", c->rel);
		dir_log_once(s, key, LOG_ERR, "%s/%s: unreadable internal snapshot table (%s): snapshots not shown",
			     s->name, c->rel, sl.error);
		qcow2_snapshot_list_free(&sl);
		return rc == -ENOMEM ? rc : 0;
	}
	/* Table order (creation order); a name taken twice shows its first entry, as qemu-img reads it. */
	for (unsigned i = 0; i < sl.n && rc == 0; i++) {
		const struct qcow2_snapshot_info *e = &sl.s[i];
		const char *nm = e->name;
		char *ident = NULL;

		if (!nm[0] || strchr(nm, '/') || !strcmp(nm, ".") || !strcmp(nm, "..") ||
		    strlen(nm) > NAME_MAX || has_view(vol, nm) || vol->nviews >= DIR_MAX_SNAPSHOTS) {
			snprintf(key, sizeof(key), "isnapname:%s#%s", c->rel, e->id);
			dir_log_once(s, key, LOG_WARNING,
				     "%s/%s: internal snapshot %s (\"%s\") cannot be a directory here: not shown",
				     s->name, c->rel, e->id, nm);
			continue;
		}
		if (asprintf(&ident, "int:%s#%s@%u.%09u", c->rel, e->id, e->date_sec, e->date_nsec) < 0)
			ident = NULL;
		ident = with_epoch(ident, epochs);
		rc = add_view(vol, nm, ident, e->disk_size, e->date_sec, 0, true, c->rel,
			      CHAIN_FMT_QCOW2, nm);
		/* used stays 0: the file's blocks are shared with current, so
		 * fs/ counts the snapshot's own data (store.h, the stat contract). */
		if (rc == 0)
			vol->views[vol->nviews - 1].mtime_nsec = (int32_t)(e->date_nsec % 1000000000u);
	}
	qcow2_snapshot_list_free(&sl);
	return rc;
}

static int build_volume(struct store *s, const struct dir_cand *c, struct store_volume *vol,
			struct lpriv *lp)
{
	struct dir_store_priv *p = s->priv;
	struct layer_io *io;
	struct chain_probe pr;
	struct dir_vpriv *vp;
	enum chain_layer_format fmt;
	int64_t mtime = 0, btime = 0;
	uint64_t used;
	unsigned epochs = 0, below = 0;
	char *ident = NULL, key[1200];
	int rc = file_io_open(p->rootfd, s->name, c->rel, false, &io);

	memset(vol, 0, sizeof(*vol));
	if (rc) {
		snprintf(key, sizeof(key), "open:%s:%d", c->rel, rc);
		dir_log_once(s, key, LOG_ERR, "%s/%s: %s: not shown", s->name, c->rel,
			     rc == -EXDEV || rc == -ELOOP ? "leads out of the store" :
			     rc == -EINVAL ? "not a regular file" : strerror(-rc));
		return rc == -ENOMEM ? rc : 1;
	}
	rc = chain_probe_layer(io, &pr);
	if (rc) {
		layer_close(io);
		return rc == -ENOMEM ? rc : 1;
	}
	fmt = pr.format;
	if (fmt == CHAIN_FMT_RAW && c->qcow2_name) {
		fmt = CHAIN_FMT_BAD;
		snprintf(pr.error, sizeof(pr.error), "no qcow2 header");
	}
	if (fmt == CHAIN_FMT_BAD) {
		snprintf(key, sizeof(key), "bad:%s", c->rel);
		dir_log_once(s, key, LOG_ERR, "%s/%s: not a readable image (%s): its views read EIO",
			     s->name, c->rel, pr.error);
	}
	vp = calloc(1, sizeof(*vp));
	vol->priv = vp;
	vol->name = strdup(c->name);
	if (!vp || !vol->name || !(vp->rel = strdup(c->rel)) || !(vp->dir = dir_part(c->rel))) {
		rc = -ENOMEM;
		goto out;
	}
	vp->fmt = fmt == CHAIN_FMT_QCOW2 ? DIR_VFMT_QCOW2 : fmt == CHAIN_FMT_RAW ? DIR_VFMT_RAW : DIR_VFMT_BAD;
	vp->pve = c->pve;
	used = file_used(p, c->rel, &mtime, &btime);
	vol->mtime = btime;
	if (asprintf(&ident, "cur:%s", c->rel) < 0)
		ident = NULL;
	rc = add_view(vol, "current", ident, fmt == CHAIN_FMT_BAD ? io->size : pr.virtual_size, mtime,
		      used, false, c->rel, fmt == CHAIN_FMT_BAD ? CHAIN_FMT_QCOW2 : fmt, NULL);
	epochs = dir_layer_note(s, &lp->layers, c->rel, fmt == CHAIN_FMT_RAW, true);
	if (rc == 0 && fmt == CHAIN_FMT_QCOW2 && c->pve)
		rc = pve_chain_views(s, vol, c, lp, &below);
	if (rc == 0 && fmt == CHAIN_FMT_QCOW2)
		rc = isnap_views(s, vol, c, io, epochs + below);
out:
	chain_probe_release(&pr);
	layer_close(io);
	if (rc)
		free_volume(vol);
	return rc;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	return h;
}

/* Network filesystems: the directories' and volume files' stat, hashed. */
static uint64_t signature(struct dir_store_priv *p, const struct store_listing *l)
{
	const struct lpriv *lp = l->priv;
	uint64_t h = 1469598103934665603ULL;
	struct stat st;

	for (int i = 0; i < lp->ndirs; i++) {
		int rc = lp->dirs[i][0] ? dir_fstatat(p->rootfd, lp->dirs[i], &st) : fstat(p->rootfd, &st);

		h = mix(h, rc ? 0 : (uint64_t)st.st_mtim.tv_sec * 1000000000ULL + (uint64_t)st.st_mtim.tv_nsec);
		h = mix(h, rc ? 0 : st.st_ino);
	}
	for (int i = 0; i < l->nvols; i++) {
		const struct dir_vpriv *vp = l->vols[i].priv;

		if (dir_fstatat(p->rootfd, vp->rel, &st) == 0) {
			h = mix(h, (uint64_t)st.st_mtim.tv_sec * 1000000000ULL + (uint64_t)st.st_mtim.tv_nsec);
			h = mix(h, st.st_ino);
		}
	}
	return h;
}

static int dscan(struct store *s, struct store_listing **out)
{
	struct dir_store_priv *p = s->priv;
	struct store_listing *l = calloc(1, sizeof(*l));
	struct lpriv *lp = calloc(1, sizeof(*lp));
	struct dir_scan sc;
	int rc;

	*out = NULL;
	if (!l || !lp) {
		free(l);
		free(lp);
		return -ENOMEM;
	}
	l->priv = lp;
	/* Drain inotify first: changes during the scan trigger the next one. */
	if (p->inotify_fd >= 0) {
		char buf[4096];

		while (read(p->inotify_fd, buf, sizeof(buf)) > 0)
			;
	}
	rc = dir_layout_scan(s, &sc);
	if (rc) {
		listing_free(s, l);
		return rc;
	}
	l->vols = calloc((size_t)sc.ncands + 1, sizeof(*l->vols));
	if (!l->vols)
		rc = -ENOMEM;
	for (int i = 0; rc == 0 && i < sc.ncands; i++) {
		int r = build_volume(s, &sc.cands[i], &l->vols[l->nvols], lp);

		if (r < 0)
			rc = r;
		else if (r == 0)
			l->nvols++;
	}
	for (int i = 0; rc == 0 && i < sc.ndirs; i++) {
		if (p->inotify_fd >= 0) {
			char path[PATH_MAX];

			snprintf(path, sizeof(path), "%s/%s", p->realpath, sc.dirs[i]);
			inotify_add_watch(p->inotify_fd, path,
					  IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
					  IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB);
		}
	}
	lp->dirs = sc.dirs;
	lp->ndirs = sc.ndirs;
	sc.dirs = NULL;
	sc.ndirs = 0;
	dir_scan_release(&sc);
	if (rc) {
		listing_free(s, l);
		return rc;
	}
	dir_layers_scanned(s);
	if (p->netfs)
		lp->sig = signature(p, l);
	{
		struct statvfs sv;

		if (fstatvfs(p->rootfd, &sv) == 0) {
			l->capacity = (uint64_t)sv.f_blocks * sv.f_frsize;
			l->available = (uint64_t)sv.f_bavail * sv.f_frsize;
		}
	}
	*out = l;
	return 0;
}

static int dchanged(struct store *s, const struct store_listing *l)
{
	struct dir_store_priv *p = s->priv;
	struct stat st;
	int changed = 0;

	if (fstat(p->rootfd, &st) || st.st_nlink == 0)
		return -ENOENT;
	/* A layer truncated or replaced in place sends no event we watch. */
	if (dir_layers_changed(s, &((const struct lpriv *)l->priv)->layers))
		return 1;
	if (p->netfs)
		return signature(p, l) != ((const struct lpriv *)l->priv)->sig;
	for (;;) {
		char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
		ssize_t n = read(p->inotify_fd, buf, sizeof(buf));

		if (n <= 0)
			break;
		for (char *q = buf; q < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)q;

			/* Our own scratch, intent and lock files do not change the listing. */
			if (!(ev->len && ev->name[0] == '.'))
				changed = 1;
			q += sizeof(*ev) + ev->len;
		}
	}
	return changed;
}

static int dopen_view(struct store *s, const struct store_listing *l, const struct store_volume *vol,
		      const struct store_view *view, struct view_reader **out)
{
	const struct dir_wpriv *w = view->priv;
	struct chain *c;
	char label[1200];
	int rc;

	*out = NULL;
	rc = dir_open_chain(s, w->rel, w->is_isnap ? w->snap : NULL, w->fmt, &c);
	if (rc)
		return rc;
	/* A snapshot view's files must be the ones it was listed from: their
	 * new bytes get a new identity at the next scan, never this one. */
	snprintf(label, sizeof(label), "%s/%s/%s", s->name, vol->name, view->name);
	if (view->snapshot &&
	    (rc = dir_layers_check_chain(s, &((const struct lpriv *)l->priv)->layers, c, label))) {
		chain_put(c);
		return rc;
	}
	return chain_reader_new_sized(c, view->size, out);
}

/* Our own operations rename and rewrite layers keeping every view's bytes:
 * the scan that follows takes the files as they are (dir_layers.c). */
static int dsnapshot_take(struct store *s, const char *volume, const char *snap,
			  const struct store_progress *pr)
{
	int rc = dir_snapshot_take(s, volume, snap, pr);

	((struct dir_store_priv *)s->priv)->rebaseline = true;
	return rc;
}

static int dsnapshot_remove(struct store *s, const char *volume, const char *snap,
			    const struct store_progress *pr)
{
	int rc = dir_snapshot_remove(s, volume, snap, pr);

	((struct dir_store_priv *)s->priv)->rebaseline = true;
	return rc;
}

static int drecover(struct store *s)
{
	int rc = dir_recover(s);

	((struct dir_store_priv *)s->priv)->rebaseline = true;
	return rc;
}

static void dclose(struct store *s)
{
	struct dir_store_priv *p = s->priv;

	if (p) {
		if (p->inotify_fd >= 0)
			close(p->inotify_fd);
		close(p->rootfd);
		for (int i = 0; i < p->nlogged; i++)
			free(p->logged[i]);
		free(p->logged);
		dir_known_free(p);
		io_gate_set_free(p->gates);
		pthread_mutex_destroy(&p->log_lock);
		free(p->path);
		free(p->realpath);
		free(p);
	}
	free(s->name);
	free(s);
}

static const struct store_ops dir_ops = {
	.kind = "dir",
	.scan = dscan,
	.listing_free = listing_free,
	.changed = dchanged,
	.open_view = dopen_view,
	.snapshot_take = dsnapshot_take,
	.snapshot_remove = dsnapshot_remove,
	.recover = drecover,
	.close = dclose,
};

int dir_store_open(const char *path, const struct store_config *cfg, struct store **out)
{
	struct store *s = calloc(1, sizeof(*s));
	struct dir_store_priv *p = calloc(1, sizeof(*p));
	struct statfs sfs;
	char real[PATH_MAX];
	const char *base;
	size_t n;

	*out = NULL;
	if (!s || !p) {
		free(s);
		free(p);
		return -ENOMEM;
	}
	s->priv = p;
	s->ops = &dir_ops;
	s->cfg = cfg;
	p->rootfd = -1;
	p->inotify_fd = -1;
	pthread_mutex_init(&p->log_lock, NULL);
	if (path[0] != '/' || !realpath(path, real)) {
		vlog(LOG_ERR, "%s: not an absolute path to a directory: %s", path,
		     path[0] != '/' ? "relative" : strerror(errno));
		dclose(s);
		return -ENOENT;
	}
	p->path = strdup(path);
	p->realpath = strdup(real);
	if (p->path)
		for (n = strlen(p->path); n > 1 && p->path[n - 1] == '/'; n--)
			p->path[n - 1] = 0;
	base = p->path ? strrchr(p->path, '/') + 1 : NULL;
	s->name = base && base[0] ? strdup(base) : NULL;
	if (!p->path || !p->realpath || !s->name) {
		if (p->path && p->realpath)
			vlog(LOG_ERR, "%s: a store needs a directory with a name (not /)", path);
		dclose(s);
		return p->path && p->realpath ? -EINVAL : -ENOMEM;
	}
	p->rootfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->rootfd < 0) {
		int rc = -errno;

		vlog(LOG_ERR, "%s: %s", path, strerror(errno));
		dclose(s);
		return rc;
	}
	if (fstatfs(p->rootfd, &sfs) == 0) {
		unsigned long t = (unsigned long)sfs.f_type;

		p->netfs = t == NFS_MAGIC || t == SMB_MAGIC || t == CIFS_MAGIC || t == SMB2_MAGIC ||
			   t == CEPH_MAGIC || t == FUSE_MAGIC || t == V9FS_MAGIC;
	}
	/* VSTORFS_DIR_POLL=1: the network-filesystem path anywhere (for tests and odd filesystems). */
	if (getenv("VSTORFS_DIR_POLL") && !strcmp(getenv("VSTORFS_DIR_POLL"), "1"))
		p->netfs = true;
	if (!p->netfs)
		p->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (!p->netfs && p->inotify_fd < 0)
		p->netfs = true;   /* no inotify: fall back to the periodic signature */
	/* Only a network filesystem can leave a read hanging for good. */
	if (p->netfs && !(p->gates = io_gate_set_new())) {
		dclose(s);
		return -ENOMEM;
	}
	p->backing.gates = p->gates;
	p->backing.rootfd = p->rootfd;
	p->backing.store = s->name;
	p->backing.abspath = p->path;
	p->backing.realpath = p->realpath;
	dir_backing_init(&p->cs, &p->backing);
	*out = s;
	return 0;
}
