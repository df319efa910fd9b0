/*
 * vg_store: see vg_store.h.
 *
 * A listing holds a reference on one lvm_vg scan and the pve_catalog built
 * from it; its views point at the LVs of that scan. Change detection is by
 * VG metadata sequence number: every lvm2 change (lvcreate, lvrename,
 * lvremove, tag changes: everything Proxmox does when it takes or removes
 * a snapshot) bumps it, and one `vgs` call per period is cheap. Guest
 * writes to an LV do not change what the tree shows.
 *
 * Identity of a snapshot view: the UUID and creation time of the layer
 * that was taken above it (the overlay mkdir created), so a snapshot taken
 * again under the same name is a new view. A merge that changes which
 * layer sits above a snapshot (rebase) first writes the old facts into
 * the snapshot LV's TAG_VIEW tag, which wins over the layer above.
 */
#include "lvm/vg_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "lvm/lvm_shell.h"
#include "store/chain_reader.h"

/* s->priv. */
struct vg_store_state {
	uint64_t seqno;     /* the metadata version seen last */
	time_t seen;        /* since when */
	struct lvm_shell *shell; /* this store's lvm2 shell: every command of its op lock;
				  * NULL: the process's (lvm_store_open_process_shell) */
};

struct vg_listing {
	struct store_listing base;
	struct lvm_vg *vg;          /* reference held */
	struct pve_catalog *cat;
	/* A qcow2 layer whose header did not read as qcow2: maybe one being
	 * written right now (lvcreate first, bytes after, and bytes do not
	 * bump the seqno), so the next period scans again. */
	bool unsettled;
};

/* What a view's priv points at. */
struct vg_view {
	const struct lvm_lv *top;
	enum chain_layer_format fmt;
	char ident[160];
};

void vg_store_lvm_opts(const struct store *s, struct lvm_opts *lo)
{
	const struct vg_store_state *st = s->priv;

	lo->devices = lvm_store_devices(s->cfg);
	lo->shell = st->shell;
}

const char *lvm_lv_tag_value(const struct lvm_lv *lv, const char *prefix)
{
	size_t n = strlen(prefix);

	for (int i = 0; lv->tags && lv->tags[i]; i++)
		if (!strncmp(lv->tags[i], prefix, n))
			return lv->tags[i] + n;
	return NULL;
}

struct probed {
	const struct lvm_lv *lv;
	uint64_t size;
	char *backing;
	bool qcow2_ok;   /* the header read as qcow2 */
};

static void probe_lv(struct lvm_vg *vg, const struct lvm_lv *lv, bool qcow2, struct probed *p)
{
	struct layer_io *io;
	struct chain_probe pr;

	p->lv = lv;
	p->size = lv->size;
	p->backing = NULL;
	p->qcow2_ok = false;
	if (!qcow2 || lvm_lv_open(vg, lv, &io) < 0)
		return;
	if (chain_probe_layer(io, &pr) == 0) {
		if (pr.format == CHAIN_FMT_QCOW2) {
			p->qcow2_ok = true;
			p->size = pr.virtual_size;
			p->backing = pr.backing;
			pr.backing = NULL;
		}
		chain_probe_release(&pr);
	}
	layer_close(io);
}

static bool backing_names(const char *backing, const char *vgname, const char *lvname)
{
	const char *name = lvm_backing_lv_name(vgname, backing);

	return name && !strcmp(name, lvname);
}

static void volume_free(struct store_volume *sv)
{
	for (int i = 0; i < sv->nviews; i++)
		free(sv->views[i].priv);
	free(sv->views);
}

/* LVM keeps seconds only: nanoseconds that never change for one view
 * (a hash of its persistent ident), so two views taken in one second
 * still differ in time and a remount shows the same times. */
static int32_t ident_nsec(const char *ident)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *ident; ident++)
		h = (h ^ (unsigned char)*ident) * 1099511628211ULL;
	return (int32_t)(h % 1000000000u);
}

static int volume_build(struct lvm_vg *vg, const struct pve_volume *pv, struct store_volume *sv,
			bool *unsettled)
{
	bool qcow2 = pv->format == PVE_FMT_QCOW2;
	int nsnaps = qcow2 ? pv->nsnaps : 0;
	struct probed *pr = calloc(nsnaps + 1, sizeof(*pr));
	uint64_t below = 0;

	sv->name = pv->lv->name;
	sv->mtime = pv->lv->ctime;
	sv->nviews = nsnaps + 1;
	sv->views = calloc(sv->nviews, sizeof(*sv->views));
	if (!pr || !sv->views) {
		free(pr);
		sv->nviews = 0;
		return -ENOMEM;
	}
	probe_lv(vg, pv->lv, qcow2, &pr[0]);
	for (int i = 0; i < nsnaps; i++)
		probe_lv(vg, pv->snaps[i].lv, true, &pr[i + 1]);
	for (int i = 0; i <= nsnaps; i++)
		if ((qcow2 || i > 0) && !pr[i].qcow2_ok)
			*unsettled = true;

	for (int i = 0; i < sv->nviews; i++) {
		struct store_view *v = &sv->views[i];
		struct vg_view *vv = calloc(1, sizeof(*vv));
		const struct lvm_lv *above = NULL;
		const char *tag;

		if (!vv)
			break;
		v->priv = vv;
		vv->top = pr[i].lv;
		vv->fmt = qcow2 ? CHAIN_FMT_QCOW2 : CHAIN_FMT_RAW;
		v->name = i ? pv->snaps[i - 1].name : "current";
		v->ident = vv->ident;
		v->size = pr[i].size;
		v->snapshot = i > 0;
		/* current may change at any moment: no time stands for its bytes. */
		v->mtime = 0;
		snprintf(vv->ident, sizeof(vv->ident), "current");
		if (i == 0)
			continue;
		/* A snapshot was taken when the layer above it was created. */
		for (int j = 0; j < sv->nviews && !above; j++)
			if (j != i && backing_names(pr[j].backing, vg->name, vv->top->name))
				above = pr[j].lv;
		v->mtime = above ? above->ctime : vv->top->ctime;
		snprintf(vv->ident, sizeof(vv->ident), "%s_%lld", above ? above->uuid : vv->top->uuid,
			 (long long)v->mtime);
		tag = lvm_lv_tag_value(vv->top, TAG_VIEW);
		if (tag) {
			const char *us = strrchr(tag, '_');

			snprintf(vv->ident, sizeof(vv->ident), "%s", tag);
			if (us)
				v->mtime = strtoll(us + 1, NULL, 10);
		}
		v->mtime_nsec = ident_nsec(vv->ident);
	}
	/* Snapshots are oldest first; a view holds its own layer and every older one. */
	for (int i = 1; i <= sv->nviews; i++) {
		struct store_view *v = &sv->views[i % sv->nviews];
		const struct vg_view *vv = v->priv;

		if (!vv)
			continue;
		below += vv->top->size;
		v->used = below < v->size ? below : v->size;
	}
	for (int i = 0; i < sv->nviews; i++)
		free(pr[i].backing);
	free(pr);
	for (int i = 0; i < sv->nviews; i++)
		if (!sv->views[i].priv)
			return -ENOMEM;
	return 0;
}

static void vs_listing_free(struct store *s, struct store_listing *l)
{
	struct vg_listing *vl = (struct vg_listing *)l;

	(void)s;
	if (!l)
		return;
	for (int i = 0; i < l->nvols; i++)
		volume_free(&l->vols[i]);
	free(l->vols);
	if (vl->cat)
		pve_catalog_free(vl->cat);
	if (vl->vg)
		lvm_vg_put(vl->vg);
	free(vl);
}

static int vs_scan(struct store *s, struct store_listing **out)
{
	struct vg_listing *vl = calloc(1, sizeof(*vl));
	struct lvm_opts lo;
	int rc = -ENOMEM;

	vg_store_lvm_opts(s, &lo);
	if (!vl)
		return rc;
	rc = lvm_vg_scan(&lo, s->name, &vl->vg);
	if (rc == 0)
		rc = pve_catalog_build(vl->vg, &vl->cat);
	if (rc == 0 && !(vl->base.vols = calloc(vl->cat->nvols ? vl->cat->nvols : 1,
						 sizeof(*vl->base.vols))))
		rc = -ENOMEM;
	for (int i = 0; rc == 0 && i < vl->cat->nvols; i++) {
		vl->base.nvols = i + 1; /* so listing_free releases a half-built volume too */
		rc = volume_build(vl->vg, &vl->cat->vols[i], &vl->base.vols[i], &vl->unsettled);
	}
	if (rc < 0) {
		vs_listing_free(s, &vl->base);
		return rc;
	}
	vl->base.capacity = vl->vg->size;
	vl->base.available = vl->vg->free_bytes;
	vlog(LOG_DEBUG, "volume group %s: seqno %llu, %d volumes", s->name,
	     (unsigned long long)vl->vg->seqno, vl->base.nvols);
	*out = &vl->base;
	return 0;
}

/* How long an unsettled listing is scanned again: a layer being copied in
 * settles in seconds; a really broken one must not cost a scan, and new
 * readers for every open file, each period forever. */
#define UNSETTLED_RETRY_S 30

static int vs_changed(struct store *s, const struct store_listing *l)
{
	const struct vg_listing *vl = (const struct vg_listing *)l;
	struct vg_store_state *st = s->priv;
	struct lvm_opts lo;
	uint64_t seqno;
	int rc;

	vg_store_lvm_opts(s, &lo);
	rc = lvm_vg_seqno(&lo, s->name, &seqno);
	if (rc < 0)
		return rc;
	if (seqno != st->seqno) {
		st->seqno = seqno;
		st->seen = time(NULL);
	}
	return !vl || seqno != vl->vg->seqno ||
	       (vl->unsettled && time(NULL) - st->seen < UNSETTLED_RETRY_S);
}

static int vs_open_view(struct store *s, const struct store_listing *l, const struct store_volume *vol,
			const struct store_view *view, struct view_reader **out)
{
	const struct vg_listing *vl = (const struct vg_listing *)l;
	const struct vg_view *vv = view->priv;
	struct layer_io *io;
	struct chain_store st;
	struct chain *c;
	char label[512];
	int rc = lvm_lv_open(vl->vg, vv->top, &io);

	if (rc < 0)
		return rc;
	snprintf(label, sizeof(label), "%s/%s@%s", s->name, vol->name, view->name);
	lvm_store_init(&st, vl->vg);
	rc = chain_open(io, vv->fmt, &st, label, &c);
	lvm_store_release(&st);
	return rc < 0 ? rc : chain_reader_new(c, out);
}

static void vs_close(struct store *s)
{
	struct vg_store_state *st = s->priv;

	if (st)
		lvm_shell_free(st->shell);
	free(s->priv);
	free(s->name);
	free(s);
}

static const struct store_ops vg_store_ops = {
	.kind = "lvm",
	.scan = vs_scan,
	.listing_free = vs_listing_free,
	.changed = vs_changed,
	.open_view = vs_open_view,
	.snapshot_take = vg_snapshot_take,
	.snapshot_remove = vg_snapshot_remove,
	.recover = vg_recover,
	.close = vs_close,
};

static int store_open(const char *vg, const struct store_config *cfg, bool own_shell,
		      struct store **out)
{
	struct store *s = calloc(1, sizeof(*s));
	struct vg_store_state *st = calloc(1, sizeof(*st));
	struct lvm_opts lo;
	uint64_t seqno;
	int rc;

	if (!s || !st || !(s->name = strdup(vg)) || (own_shell && !(st->shell = lvm_shell_new()))) {
		if (s)
			free(s->name);
		free(st);
		free(s);
		return -ENOMEM;
	}
	s->priv = st;
	s->ops = &vg_store_ops;
	s->cfg = cfg;
	/* The store's shell starts here, with its first command. */
	vg_store_lvm_opts(s, &lo);
	rc = lvm_vg_seqno(&lo, vg, &seqno);
	if (rc < 0) {
		vlog(LOG_ERR, "volume group %s: %s", vg, rc == -ENOENT ? "not found" : strerror(-rc));
		vs_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

int lvm_store_open(const char *vg, const struct store_config *cfg, struct store **out)
{
	return store_open(vg, cfg, true, out);
}

int lvm_store_open_process_shell(const char *vg, const struct store_config *cfg, struct store **out)
{
	return store_open(vg, cfg, false, out);
}

int lvm_store_list_vgs(const struct store_config *cfg, char ***names)
{
	struct lvm_opts lo = { .devices = lvm_store_devices(cfg) };

	return lvm_list_vgs(&lo, names);
}
