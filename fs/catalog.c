/*
 * catalog: builds and publishes the per-VG snapshots the tree is served
 * from (see catalog.h), and keeps them fresh from a background thread.
 *
 * Change detection is by VG metadata sequence number: every lvm2 change
 * (lvcreate, lvrename, lvremove, tag changes — everything Proxmox does when
 * it takes or removes a snapshot) bumps it, and one `vgs` call per VG per
 * period is cheap. Guest writes to an LV do not change what the tree shows.
 */
#include "catalog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "fs/options.h"

static pthread_mutex_t catalog_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_vg **published;    /* catalog_lock; sorted by name */
static int npublished;              /* catalog_lock */
static uint64_t generation;         /* atomic */

static struct lvm_opts lvm_opts;
static char **wanted_vgs;           /* NULL: every VG ("all") */
static unsigned rescan_secs;
static pthread_t rescan_thread;
/* Held by snapshot operations: the periodic rescan must not publish their intermediate states. */
static pthread_mutex_t ops_lock = PTHREAD_MUTEX_INITIALIZER;
static bool rescan_running;
static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static bool stopping;               /* stop_lock */

void fs_vg_get(struct fs_vg *vg)
{
	__atomic_add_fetch(&vg->refs, 1, __ATOMIC_RELAXED);
}

static void vg_free(struct fs_vg *vg)
{
	for (int i = 0; i < vg->nvols; i++) {
		for (int j = 0; j < vg->vols[i].nviews; j++)
			if (vg->vols[i].views[j].chain)
				chain_put(vg->vols[i].views[j].chain);
		free(vg->vols[i].views);
	}
	free(vg->vols);
	if (vg->cat)
		pve_catalog_free(vg->cat);
	if (vg->lvm)
		lvm_vg_put(vg->lvm);
	pthread_mutex_destroy(&vg->chain_lock);
	free(vg->name);
	free(vg);
}

void fs_vg_put(struct fs_vg *vg)
{
	if (vg && __atomic_sub_fetch(&vg->refs, 1, __ATOMIC_ACQ_REL) == 0)
		vg_free(vg);
}

/* A backing string as Proxmox writes it: the bare LV name, or /dev/<vg>/<lv>. */
static bool backing_names(const char *backing, const char *vgname, const char *lvname)
{
	const char *name = lvm_backing_lv_name(vgname, backing);

	return name && !strcmp(name, lvname);
}

struct probed {
	const struct lvm_lv *lv;
	uint64_t size;
	char *backing;
};

static void probe_lv(struct fs_vg *vg, const struct lvm_lv *lv, bool qcow2, struct probed *p)
{
	struct layer_io *io;
	struct chain_probe pr;

	p->lv = lv;
	p->size = lv->size;
	p->backing = NULL;
	if (!qcow2 || lvm_lv_open(vg->lvm, lv, &io) < 0)
		return;
	if (chain_probe_layer(io, &pr) == 0) {
		if (pr.format == CHAIN_FMT_QCOW2) {
			p->size = pr.virtual_size;
			p->backing = pr.backing;
			pr.backing = NULL;
		}
		chain_probe_release(&pr);
	}
	layer_close(io);
}

static int volume_build(struct fs_vg *vg, const struct pve_volume *pv, struct fs_volume *fv)
{
	bool qcow2 = pv->format == PVE_FMT_QCOW2;
	int nsnaps = qcow2 ? pv->nsnaps : 0;
	struct probed *pr = calloc(nsnaps + 1, sizeof(*pr));
	uint64_t below = 0;

	fv->vol = pv;
	fv->name = pv->lv->name;
	fv->nviews = nsnaps + 1;
	fv->views = calloc(fv->nviews, sizeof(*fv->views));
	if (!pr || !fv->views) {
		free(pr);
		return -ENOMEM;
	}
	probe_lv(vg, pv->lv, qcow2, &pr[0]);
	for (int i = 0; i < nsnaps; i++)
		probe_lv(vg, pv->snaps[i].lv, true, &pr[i + 1]);

	for (int i = 0; i < fv->nviews; i++) {
		struct fs_view *v = &fv->views[i];

		v->name = i ? pv->snaps[i - 1].name : "current";
		v->top = pr[i].lv;
		v->fmt = qcow2 ? CHAIN_FMT_QCOW2 : CHAIN_FMT_RAW;
		v->size = pr[i].size;
		v->snapshot = i > 0;
		v->mtime = v->top->ctime;
		/* A snapshot was taken when the layer above it was created. */
		for (int j = 0; i > 0 && j < fv->nviews; j++)
			if (j != i && backing_names(pr[j].backing, vg->name, v->top->name))
				v->mtime = pr[j].lv->ctime;
	}
	/* Snapshots are oldest first; a view holds its own layer and every older one. */
	for (int i = 1; i <= fv->nviews; i++) {
		struct fs_view *v = &fv->views[i % fv->nviews];

		below += v->top->size;
		v->used = below < v->size ? below : v->size;
	}
	for (int i = 0; i < fv->nviews; i++)
		free(pr[i].backing);
	free(pr);
	return 0;
}

/* Scan VG `name` into a new snapshot with one reference. */
static int vg_build(const char *name, struct fs_vg **out)
{
	struct fs_vg *vg = calloc(1, sizeof(*vg));
	int rc = -ENOMEM;

	if (!vg || !(vg->name = strdup(name)))
		goto fail;
	vg->refs = 1;
	pthread_mutex_init(&vg->chain_lock, NULL);
	rc = lvm_vg_scan(&lvm_opts, name, &vg->lvm);
	if (rc < 0)
		goto fail;
	vg->seqno = vg->lvm->seqno;
	rc = pve_catalog_build(vg->lvm, &vg->cat);
	if (rc < 0)
		goto fail;
	vg->vols = calloc(vg->cat->nvols ? vg->cat->nvols : 1, sizeof(*vg->vols));
	if (!vg->vols) {
		rc = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < vg->cat->nvols; i++) {
		vg->nvols = i + 1; /* so vg_free releases a half-built volume too */
		if ((rc = volume_build(vg, &vg->cat->vols[i], &vg->vols[i])) < 0)
			goto fail;
	}
	*out = vg;
	return 0;
fail:
	if (vg && vg->name)
		vg_free(vg);
	else
		free(vg);
	return rc;
}

static int vg_cmp(const void *a, const void *b)
{
	return strcmp((*(struct fs_vg *const *)a)->name, (*(struct fs_vg *const *)b)->name);
}

/* Replace (or add) the published snapshot of vg->name; takes over the caller's reference. */
static void publish(struct fs_vg *vg)
{
	struct fs_vg *old = NULL, **grown;

	pthread_mutex_lock(&catalog_lock);
	for (int i = 0; i < npublished; i++) {
		if (!strcmp(published[i]->name, vg->name)) {
			old = published[i];
			published[i] = vg;
			goto out;
		}
	}
	grown = realloc(published, (npublished + 1) * sizeof(*grown));
	if (!grown) {
		old = vg; /* cannot publish: drop it, the next rescan retries */
		goto out;
	}
	published = grown;
	published[npublished++] = vg;
	qsort(published, npublished, sizeof(*published), vg_cmp);
out:
	__atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&catalog_lock);
	fs_vg_put(old);
}

uint64_t fs_catalog_generation(void)
{
	return __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
}

static void unpublish(const char *name)
{
	struct fs_vg *old = NULL;

	pthread_mutex_lock(&catalog_lock);
	for (int i = 0; i < npublished; i++) {
		if (!strcmp(published[i]->name, name)) {
			old = published[i];
			memmove(&published[i], &published[i + 1], (npublished - i - 1) * sizeof(*published));
			npublished--;
			__atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
			break;
		}
	}
	pthread_mutex_unlock(&catalog_lock);
	fs_vg_put(old);
}

struct fs_vg *fs_catalog_get_vg(const char *name)
{
	struct fs_vg *vg = NULL;

	pthread_mutex_lock(&catalog_lock);
	for (int i = 0; i < npublished; i++) {
		if (!strcmp(published[i]->name, name)) {
			vg = published[i];
			fs_vg_get(vg);
			break;
		}
	}
	pthread_mutex_unlock(&catalog_lock);
	return vg;
}

char **fs_catalog_vg_names(void)
{
	char **names;

	pthread_mutex_lock(&catalog_lock);
	names = calloc(npublished + 1, sizeof(*names));
	for (int i = 0; names && i < npublished; i++) {
		if (!(names[i] = strdup(published[i]->name))) {
			lvm_free_names(names);
			names = NULL;
		}
	}
	pthread_mutex_unlock(&catalog_lock);
	return names;
}

static uint64_t published_seqno(const char *name, bool *found)
{
	struct fs_vg *vg = fs_catalog_get_vg(name);
	uint64_t s = vg ? vg->seqno : 0;

	*found = vg != NULL;
	fs_vg_put(vg);
	return s;
}

static int refresh_vg(const char *name, bool changed)
{
	uint64_t seqno = 0;
	bool found;
	struct fs_vg *vg;
	int rc = changed ? 0 : lvm_vg_seqno(&lvm_opts, name, &seqno);

	if (rc == -ENOENT) {
		if (published_seqno(name, &found), found)
			vlog(LOG_WARNING, "volume group %s is gone", name);
		unpublish(name);
		return rc;
	}
	if (rc < 0)
		return rc;
	if (!changed && published_seqno(name, &found) == seqno && found)
		return 0;
	rc = vg_build(name, &vg);
	if (rc == -ENOENT) {
		unpublish(name);
		return rc;
	}
	if (rc < 0) {
		vlog(LOG_ERR, "volume group %s: scan failed: %s", name, strerror(-rc));
		return rc;
	}
	vlog(LOG_DEBUG, "volume group %s: seqno %llu, %d volumes", name,
	     (unsigned long long)vg->seqno, vg->nvols);
	publish(vg);
	return 0;
}

int fs_catalog_refresh_vg(const char *name)
{
	return refresh_vg(name, false);
}

int fs_catalog_rescan_vg(const char *name)
{
	return refresh_vg(name, true);
}

static void refresh_all(void)
{
	char **names = wanted_vgs;
	char **all = NULL, **pub;

	if (!names) {
		if (lvm_list_vgs(&lvm_opts, &all) < 0)
			return;
		names = all;
		/* VGs that vanished from "all" leave the tree. */
		pub = fs_catalog_vg_names();
		for (int i = 0; pub && pub[i]; i++) {
			bool keep = false;

			for (int j = 0; all[j] && !keep; j++)
				keep = !strcmp(all[j], pub[i]);
			if (!keep)
				unpublish(pub[i]);
		}
		lvm_free_names(pub);
	}
	for (int i = 0; names[i]; i++)
		fs_catalog_refresh_vg(names[i]);
	lvm_free_names(all);
}

static void *rescan_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&stop_lock);
	while (!stopping) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += rescan_secs;
		pthread_cond_timedwait(&stop_cond, &stop_lock, &until);
		if (stopping)
			break;
		pthread_mutex_unlock(&stop_lock);
		if (pthread_mutex_trylock(&ops_lock) == 0) {
			refresh_all();
			pthread_mutex_unlock(&ops_lock);
		}
		pthread_mutex_lock(&stop_lock);
	}
	pthread_mutex_unlock(&stop_lock);
	return NULL;
}

int fs_catalog_start(const struct fs_options *o)
{
	lvm_opts.devices = o->devices;
	wanted_vgs = o->vgs;
	rescan_secs = o->rescan_secs;
	if (!wanted_vgs) {
		refresh_all();
		return 0;
	}
	for (int i = 0; wanted_vgs[i]; i++) {
		int rc = fs_catalog_refresh_vg(wanted_vgs[i]);

		if (rc < 0) {
			vlog(LOG_ERR, "volume group %s: %s", wanted_vgs[i],
			     rc == -ENOENT ? "not found" : strerror(-rc));
			return rc;
		}
	}
	return 0;
}

int fs_catalog_start_rescan(void)
{
	int rc = pthread_create(&rescan_thread, NULL, rescan_main, NULL);

	rescan_running = rc == 0;
	return -rc;
}

void fs_catalog_stop(void)
{
	pthread_mutex_lock(&stop_lock);
	stopping = true;
	pthread_cond_broadcast(&stop_cond);
	pthread_mutex_unlock(&stop_lock);
	if (rescan_running)
		pthread_join(rescan_thread, NULL);
	rescan_running = false;
	pthread_mutex_lock(&catalog_lock);
	while (npublished)
		fs_vg_put(published[--npublished]);
	free(published);
	published = NULL;
	pthread_mutex_unlock(&catalog_lock);
}

static int vol_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct fs_volume *)elem)->name);
}

const struct fs_volume *fs_vg_find_volume(const struct fs_vg *vg, const char *name)
{
	return bsearch(name, vg->vols, vg->nvols, sizeof(*vg->vols), vol_cmp);
}

struct fs_view *fs_volume_find_view(const struct fs_volume *vol, const char *name)
{
	for (int i = 0; i < vol->nviews; i++)
		if (!strcmp(vol->views[i].name, name))
			return &vol->views[i];
	return NULL;
}

int fs_view_chain(struct fs_vg *vg, struct fs_view *view, const char *volname, struct chain **out)
{
	struct layer_io *io;
	struct chain_store store;
	char label[512];
	int rc = 0;

	pthread_mutex_lock(&vg->chain_lock);
	if (!view->chain) {
		rc = lvm_lv_open(vg->lvm, view->top, &io);
		if (rc == 0) {
			snprintf(label, sizeof(label), "%s/%s@%s", vg->name, volname, view->name);
			lvm_store_init(&store, vg->lvm);
			rc = chain_open(io, view->fmt, &store, label, &view->chain);
			lvm_store_release(&store);
		}
	}
	if (rc == 0) {
		chain_get(view->chain);
		*out = view->chain;
	}
	pthread_mutex_unlock(&vg->chain_lock);
	return rc;
}

void fs_catalog_hold(void)
{
	pthread_mutex_lock(&ops_lock);
}

void fs_catalog_release(void)
{
	pthread_mutex_unlock(&ops_lock);
}
