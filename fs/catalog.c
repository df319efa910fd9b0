/*
 * catalog: builds and publishes the per-store listings the tree is served
 * from (see catalog.h), and keeps them fresh from a background thread.
 */
#include "catalog.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "fs/options.h"
#include "fs/snapshot_checks.h"
#include "store/snapshot_rules.h"
#include "store/store_set.h"

/*
 * Locks, in order (a thread holding one may take only those below it):
 *   1. store_lock.op   one store's snapshot operations and the scans that
 *                      publish its listing (see "Why per store" below)
 *   2. set_lock        the store set (stores, its arrays) and `locks`
 *   3. catalog_lock    the published array
 * fs_store.reader_lock is taken alone. stop_lock is the rescan thread's
 * sleep and is never held with any of them.
 *
 * Why per store, and not per volume: a store's own platform lock (Proxmox's
 * pve-storage-<id> flock, dir's and lvm's own lock file) is per storage, so
 * two operations on one store serialize there anyway, and a second flock
 * from this process would wait for it (10 s, then EBUSY) instead of queueing.
 * Nor would a finer lock here speed up the volume itself: the kernel holds
 * the volume directory's lock for the whole rmdir, so lookups in that
 * directory wait for it in the VFS before they reach us.
 *
 * Why a rescan skips a store whose operation runs (trylock), rather than
 * scanning beside it -- what the old global lock protected silently:
 *  - lvm (vg_store.c vs_scan): mid-operation the VG holds a scratch LV
 *    and a renamed volume; a scan would publish that half-done state.
 *  - dir (dir_store.c dscan/dchanged): changed() drains the store's one
 *    inotify descriptor and scan() rewrites per-store state (logged
 *    volumes); the operation scans the store itself (dir_op_begin), so
 *    two scans of one store must not overlap.
 *  - rbd (rbd_list.c): scan() replaces rs->cache/ncache and changed()
 *    writes rs->last_changed_err, unlocked.
 * So each store's scans and operations are serialized by its op lock;
 * other stores' rescans and operations never wait for it. The operation
 * publishes its own result (refresh after it), so skipping loses nothing.
 */
static pthread_mutex_t catalog_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_store **published; /* catalog_lock; sorted by name */
static int npublished;              /* catalog_lock */
static uint64_t generation;         /* atomic */

struct store_lock {
	struct store *st;               /* constant; open until the set closes */
	pthread_mutex_t op;             /* the store's operations and publishing scans */
	struct timespec resynced;       /* op: the last fs_catalog_resync scan */
	struct store_lock *next;        /* set_lock */
};

static pthread_mutex_t set_lock = PTHREAD_MUTEX_INITIALIZER;
static struct store_set *stores;    /* set_lock after start (refresh, find, at reallocate) */
static struct store_lock *locks;    /* set_lock; one per store ever in the set, freed at stop */
static unsigned rescan_secs;        /* constant after start */
static pthread_t rescan_thread;
static bool rescan_running;         /* start/stop only */
static pthread_mutex_t stop_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static bool stopping;               /* stop_lock */

/* The op lock of st, made on first use; set_lock held. NULL: no memory. */
static struct store_lock *lock_of(struct store *st)
{
	struct store_lock *l;

	for (l = locks; l; l = l->next)
		if (l->st == st)
			return l;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->st = st;
	pthread_mutex_init(&l->op, NULL);
	l->next = locks;
	locks = l;
	return l;
}

static void locks_free(void)
{
	while (locks) {
		struct store_lock *l = locks;

		locks = l->next;
		pthread_mutex_destroy(&l->op);
		free(l);
	}
}

void fs_store_get(struct fs_store *s)
{
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
}

static int total_views(const struct store_listing *l)
{
	int n = 0;

	for (int i = 0; i < l->nvols; i++)
		n += l->vols[i].nviews;
	return n;
}

static void fs_store_free(struct fs_store *s)
{
	if (s->readers) {
		int n = total_views(s->listing);

		for (int i = 0; i < n; i++)
			view_reader_put(s->readers[i]);
	}
	free(s->readers);
	free(s->first_view);
	s->store->ops->listing_free(s->store, s->listing);
	pthread_mutex_destroy(&s->reader_lock);
	free(s);
}

void fs_store_put(struct fs_store *s)
{
	if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
		fs_store_free(s);
}

/* Scan `st` into a new fs_store with one reference. */
static int build(struct store *st, struct fs_store **out)
{
	struct fs_store *s = calloc(1, sizeof(*s));
	int rc, n;

	if (!s)
		return -ENOMEM;
	rc = st->ops->scan(st, &s->listing);
	if (rc < 0) {
		free(s);
		return rc;
	}
	s->store = st;
	s->refs = 1;
	pthread_mutex_init(&s->reader_lock, NULL);
	n = total_views(s->listing);
	s->first_view = calloc(s->listing->nvols + 1, sizeof(*s->first_view));
	s->readers = calloc(n + 1, sizeof(*s->readers));
	if (!s->first_view || !s->readers) {
		fs_store_free(s);
		return -ENOMEM;
	}
	for (int i = 0, k = 0; i < s->listing->nvols; k += s->listing->vols[i++].nviews)
		s->first_view[i] = k;
	*out = s;
	return 0;
}

static int store_cmp(const void *a, const void *b)
{
	return strcmp((*(struct fs_store *const *)a)->store->name,
		      (*(struct fs_store *const *)b)->store->name);
}

/* Replace (or add) the published listing of s->store; takes over the caller's reference. */
static void publish(struct fs_store *s)
{
	struct fs_store *old = NULL, **grown;

	pthread_mutex_lock(&catalog_lock);
	for (int i = 0; i < npublished; i++) {
		if (!strcmp(published[i]->store->name, s->store->name)) {
			old = published[i];
			published[i] = s;
			goto out;
		}
	}
	grown = realloc(published, (npublished + 1) * sizeof(*grown));
	if (!grown) {
		old = s; /* cannot publish: drop it, the next rescan retries */
		goto out;
	}
	published = grown;
	published[npublished++] = s;
	qsort(published, npublished, sizeof(*published), store_cmp);
out:
	__atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&catalog_lock);
	fs_store_put(old);
}

static void unpublish(const char *name)
{
	struct fs_store *old = NULL;

	pthread_mutex_lock(&catalog_lock);
	for (int i = 0; i < npublished; i++) {
		if (!strcmp(published[i]->store->name, name)) {
			old = published[i];
			memmove(&published[i], &published[i + 1], (npublished - i - 1) * sizeof(*published));
			npublished--;
			__atomic_add_fetch(&generation, 1, __ATOMIC_RELEASE);
			break;
		}
	}
	pthread_mutex_unlock(&catalog_lock);
	fs_store_put(old);
}

uint64_t fs_catalog_generation(void)
{
	return __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
}

struct fs_store *fs_catalog_get_store(const char *name)
{
	struct fs_store *s = NULL;

	pthread_mutex_lock(&catalog_lock);
	for (int i = 0; i < npublished; i++) {
		if (!strcmp(published[i]->store->name, name)) {
			s = published[i];
			fs_store_get(s);
			break;
		}
	}
	pthread_mutex_unlock(&catalog_lock);
	return s;
}

void fs_catalog_free_names(char **names)
{
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}

char **fs_catalog_store_names(void)
{
	char **names;

	pthread_mutex_lock(&catalog_lock);
	names = calloc(npublished + 1, sizeof(*names));
	for (int i = 0; names && i < npublished; i++) {
		if (!(names[i] = strdup(published[i]->store->name))) {
			fs_catalog_free_names(names);
			names = NULL;
		}
	}
	pthread_mutex_unlock(&catalog_lock);
	return names;
}

/* What logs call a store: its own kind, never "lvm" for a directory. */
static const char *kind_name(const struct store *st)
{
	const char *k = st->ops->kind;

	return !strcmp(k, "lvm") ? "volume group" : !strcmp(k, "dir") ? "directory"
	     : !strcmp(k, "rbd") ? "pool" : "store";
}

/* Is st still in the set? A store that left it ("all", "pve:") must not
 * come back into the tree from an operation that ran while it left. */
static bool in_set(struct store *st)
{
	bool in;

	pthread_mutex_lock(&set_lock);
	in = stores && store_set_find(stores, st->name) == st;
	pthread_mutex_unlock(&set_lock);
	return in;
}

/* Rescan one store if it changed (or unconditionally); its op lock held. */
static int refresh(struct store *st, bool force)
{
	struct fs_store *cur = fs_catalog_get_store(st->name), *fresh;
	int rc = force || !cur ? 1 : st->ops->changed(st, cur->listing);

	fs_store_put(cur);
	if (rc == -ENOENT) {
		if (cur)
			vlog(LOG_WARNING, "%s %s is gone", kind_name(st), st->name);
		unpublish(st->name);
		return rc;
	}
	if (rc <= 0)
		return rc;
	rc = build(st, &fresh);
	if (rc == -ENOENT) {
		unpublish(st->name);
		return rc;
	}
	if (rc < 0) {
		vlog(LOG_ERR, "%s %s: scan failed: %s", kind_name(st), st->name, strerror(-rc));
		return rc;
	}
	if (!in_set(st)) {
		fs_store_put(fresh);
		return -ENOENT;
	}
	publish(fresh);
	return 0;
}

/* The set's stores and their op locks, as of now; set_lock held. */
static int set_snapshot(struct store_lock ***out)
{
	int n = store_set_refresh(stores);
	struct store_lock **v = calloc(n + 1, sizeof(*v));

	for (int i = 0; v && i < n; i++) {
		if (!(v[i] = lock_of(store_set_at(stores, i)))) {
			free(v);
			v = NULL;
		}
	}
	*out = v;
	return v ? n : 0;
}

static void refresh_all(void)
{
	struct store_lock **v;
	char **pub;
	int n;

	pthread_mutex_lock(&set_lock);
	n = set_snapshot(&v);
	/* Stores that left the set ("all": a VG removed; "pve:": a storage
	 * dropped or replaced by a new store of its name) leave the tree. */
	pub = fs_catalog_store_names();
	for (int i = 0; pub && pub[i]; i++) {
		struct fs_store *cur = fs_catalog_get_store(pub[i]);

		if (cur && cur->store != store_set_find(stores, pub[i]))
			unpublish(pub[i]);
		fs_store_put(cur);
	}
	pthread_mutex_unlock(&set_lock);
	fs_catalog_free_names(pub);
	/* A store whose operation runs is skipped: see "Why a rescan skips". */
	for (int i = 0; i < n; i++) {
		if (pthread_mutex_trylock(&v[i]->op) == 0) {
			refresh(v[i]->st, false);
			pthread_mutex_unlock(&v[i]->op);
		}
	}
	free(v);
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
		refresh_all();
		pthread_mutex_lock(&stop_lock);
	}
	pthread_mutex_unlock(&stop_lock);
	return NULL;
}

int fs_catalog_start(const struct fs_options *o)
{
	int rc = store_set_open(o->source, &o->store, &stores), n;

	rescan_secs = o->rescan_secs;
	if (rc < 0)
		return rc;
	n = store_set_count(stores);
	/* Finish what a crash interrupted before anyone sees the tree. */
	for (int i = 0; i < n && !o->read_only; i++) {
		struct store *st = store_set_at(stores, i);

		if (st->ops->recover && st->ops->recover(st) < 0)
			vlog(LOG_WARNING, "%s: some interrupted snapshot operations could not be finished",
			     st->name);
	}
	for (int i = 0; i < n; i++) {
		struct store *st = store_set_at(stores, i);

		rc = refresh(st, true);
		if (rc < 0) {
			vlog(LOG_ERR, "%s %s: %s", kind_name(st), st->name,
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
		fs_store_put(published[--npublished]);
	free(published);
	published = NULL;
	pthread_mutex_unlock(&catalog_lock);
	store_set_close(stores);
	stores = NULL;
	locks_free();
}

int fs_store_view_reader(struct fs_store *s, const struct store_volume *vol,
			 const struct store_view *view, struct view_reader **out)
{
	int idx = s->first_view[vol - s->listing->vols] + (int)(view - vol->views), rc;
	struct view_reader *r, *kept;

	pthread_mutex_lock(&s->reader_lock);
	r = s->readers[idx];
	if (r)
		view_reader_get(r);
	pthread_mutex_unlock(&s->reader_lock);
	if (r) {
		*out = r;
		return 0;
	}
	/* Opened unlocked: a chain's open reads headers and tables of every
	 * layer, and other views of the store need not wait for that. */
	rc = s->store->ops->open_view(s->store, s->listing, vol, view, &r);
	if (rc)
		return rc;
	/* A live view read through cached tables is only kept for the open it
	 * was made for (view_reader.h, follows_writes); a broken one stays, as
	 * it was logged once. Of two opened at once, the first kept wins. */
	if (view->snapshot || r->follows_writes || r->broken) {
		pthread_mutex_lock(&s->reader_lock);
		kept = s->readers[idx];
		if (!kept) {
			s->readers[idx] = r;
			view_reader_get(r);
		} else {
			view_reader_get(kept);
		}
		pthread_mutex_unlock(&s->reader_lock);
		if (kept) {
			view_reader_put(r);
			r = kept;
		}
	}
	*out = r;
	return 0;
}

static void log_progress(void *arg, uint64_t done, uint64_t total)
{
	vlog(LOG_DEBUG, "%s: %llu of %llu bytes", (const char *)arg, (unsigned long long)done,
	     (unsigned long long)total);
}

/* The store `name` and its op lock, or -ENOENT / -ENOMEM. */
static int find_store(const char *name, struct store_lock **out)
{
	struct store *st;
	int rc = -ENOENT;

	pthread_mutex_lock(&set_lock);
	st = stores ? store_set_find(stores, name) : NULL;
	if (st) {
		*out = lock_of(st);
		rc = *out ? 0 : -ENOMEM;
	}
	pthread_mutex_unlock(&set_lock);
	return rc;
}

/*
 * A listing is built from headers read at its scan; a layer being copied
 * in at that moment (a Proxmox snapshot's new overlay: lvcreate, then
 * qemu-img create) is listed at its LV's size until a scan sees its header.
 * An open reads the header itself, so it may already read the settled
 * bytes while stat, served from the listing, still shows the guess, for up
 * to a rescan period: a backup tool sizing its copy from stat then reads a
 * short file. So such an open rescans the store before it returns.
 *
 * Bounded: once per listing, at most every RESYNC_MIN_NS per store (a
 * store whose listing and reader keep disagreeing costs a few scans a
 * second under constant opens, not one per open), and never waiting
 * behind a snapshot operation, which publishes its own listing.
 */
#define RESYNC_MIN_NS 200000000LL

void fs_catalog_resync(struct fs_store *s, const struct store_view *view, uint64_t opened_size)
{
	struct store_lock *sl = NULL;
	struct timespec now;
	long long since;

	if (__atomic_exchange_n(&s->resynced, true, __ATOMIC_ACQ_REL))
		return;
	if (find_store(s->store->name, &sl) || pthread_mutex_trylock(&sl->op))
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	since = (now.tv_sec - sl->resynced.tv_sec) * 1000000000LL + now.tv_nsec - sl->resynced.tv_nsec;
	if (since >= RESYNC_MIN_NS && in_set(s->store)) {
		sl->resynced = now;
		vlog(LOG_DEBUG, "%s: view %s opened at %llu bytes, listed at %llu: rescanning",
		     s->store->name, view->name, (unsigned long long)opened_size,
		     (unsigned long long)view->size);
		refresh(s->store, true);
	}
	pthread_mutex_unlock(&sl->op);
}

/* The checks every store shares, against the newest listing (refreshed
 * first if the store changed): fs/snapshot_checks.h. */
static int precheck(struct store *st, const char *volume, const char *snap, bool take)
{
	struct fs_store *cur;
	int rc = store_snapshot_check(st->cfg, take, snap);

	if (rc)
		return rc;
	refresh(st, false);
	cur = fs_catalog_get_store(st->name);
	rc = cur ? fs_snapshot_listing_check(cur->listing, volume, snap, take) : -ENOENT;
	fs_store_put(cur);
	return rc;
}

static int snapshot_op(const char *name, const char *volume, const char *snap, bool take)
{
	char label[600];
	struct store_progress p = { log_progress, label };
	struct store_lock *sl;
	struct store *st;
	int rc = find_store(name, &sl);

	if (rc)
		return rc;
	st = sl->st;
	snprintf(label, sizeof(label), "%s/%s: %s %s", name, volume, take ? "taking" : "deleting", snap);
	pthread_mutex_lock(&sl->op);
	if (!(take ? st->ops->snapshot_take : st->ops->snapshot_remove))
		rc = -EROFS;
	else
		rc = precheck(st, volume, snap, take);
	if (!rc) {
		rc = take ? st->ops->snapshot_take(st, volume, snap, &p)
			  : st->ops->snapshot_remove(st, volume, snap, &p);
		refresh(st, true);
	}
	pthread_mutex_unlock(&sl->op);
	return rc;
}

int fs_catalog_snapshot_take(const char *store, const char *volume, const char *snap)
{
	return snapshot_op(store, volume, snap, true);
}

int fs_catalog_snapshot_remove(const char *store, const char *volume, const char *snap)
{
	return snapshot_op(store, volume, snap, false);
}
