/*
 * rbd_list: the listing of an RBD store.
 *
 * The pool's (namespace's) rbd_directory names its images (images in the
 * trash are not in it). Each image's metadata (size, snapshots, timestamps)
 * lives in its header object, rbd_header.<id>, and every change to it (a
 * snapshot taken or removed, a resize, a rename's id<->name records aside)
 * bumps that object's rados version. So:
 *
 *   scan      rbd_list2, then one stat per header object (all in flight at
 *             once); an image whose header version is the one cached is
 *             taken from the cache, the others are opened (read-only, a
 *             few at a time in parallel) and read again.
 *   changed   rbd_list2 and the same stats, compared with the listing's:
 *             bounded (one small op per image, in flight together), never
 *             an image open. A pool of 1,000 images rescans in well under
 *             a second once cached.
 *
 * Idents: "<image id>" for current, "<image id>@<snap id>" for a snapshot.
 * Ceph never reuses either (snapshot ids come from the pool's sequence), so
 * a snapshot removed and taken again under the same name gets a new ident.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "rbd/rbd.h"

#define STAT_WINDOW 128
#define OPEN_THREADS 8

struct img_ref {
	char *id, *name;   /* from rbd_list2 */
	char *oid;         /* header object */
	uint64_t ver;
	int err;           /* stat/open result */
	struct rbd_image_meta *meta;
};

void rbd_image_meta_put(struct rbd_image_meta *m)
{
	if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (int i = 0; i < m->nsnaps; i++) {
		free(m->snaps[i].name);
		free(m->snaps[i].ident);
	}
	free(m->snaps);
	free(m->id);
	free(m->name);
	free(m->ident);
	free(m);
}

static void meta_get(struct rbd_image_meta *m)
{
	__atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
}

static char *header_oid(const char *id, const char *name)
{
	char *s = NULL;

	if (id && *id) {
		if (asprintf(&s, "rbd_header.%s", id) < 0)
			s = NULL;
	} else if (asprintf(&s, "%s.rbd", name) < 0) {   /* format 1 */
		s = NULL;
	}
	return s;
}

static int list_images(struct rbd_store *rs, rbd_image_spec_t **out, size_t *n)
{
	size_t max = 64;
	rbd_image_spec_t *v = NULL;
	int r;

	for (;;) {
		rbd_image_spec_t *nv = realloc(v, max * sizeof(*v));

		if (!nv) {
			free(v);
			return -ENOMEM;
		}
		v = nv;
		size_t m = max;
		r = rbd_list2(rs->io, v, &m);
		if (r == -ERANGE && m > max) {
			max = m;
			continue;
		}
		if (r < 0) {
			free(v);
			return r;
		}
		*out = v;
		*n = m;
		return 0;
	}
}

static void refs_free(struct img_ref *refs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(refs[i].id);
		free(refs[i].name);
		free(refs[i].oid);
		rbd_image_meta_put(refs[i].meta);
	}
	free(refs);
}

static int cmp_ref_oid(const void *a, const void *b)
{
	return strcmp(((const struct img_ref *)a)->oid, ((const struct img_ref *)b)->oid);
}

/* The pool's images with their header versions, sorted by header oid. */
static int list_with_versions(struct rbd_store *rs, struct img_ref **out, size_t *nout)
{
	rbd_image_spec_t *specs = NULL;
	struct img_ref *refs;
	rados_completion_t comp[STAT_WINDOW];
	size_t n = 0;
	int r;

	r = list_images(rs, &specs, &n);
	if (r < 0)
		return r;
	refs = calloc(n ? n : 1, sizeof(*refs));
	if (!refs) {
		rbd_image_spec_list_cleanup(specs, n);
		free(specs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		refs[i].id = strdup(specs[i].id ? specs[i].id : "");
		refs[i].name = strdup(specs[i].name ? specs[i].name : "");
		refs[i].oid = refs[i].id && refs[i].name ? header_oid(refs[i].id, refs[i].name) : NULL;
		if (!refs[i].oid)
			r = -ENOMEM;
	}
	rbd_image_spec_list_cleanup(specs, n);
	free(specs);
	if (r < 0)
		goto fail;
	/* one stat per header, STAT_WINDOW in flight */
	for (size_t base = 0; base < n && r == 0; base += STAT_WINDOW) {
		size_t cnt = n - base < STAT_WINDOW ? n - base : STAT_WINDOW, issued = 0;
		uint64_t psize[STAT_WINDOW];
		time_t pmtime[STAT_WINDOW];

		for (; issued < cnt; issued++) {
			int e = rados_aio_create_completion2(NULL, NULL, &comp[issued]);

			if (e == 0) {
				e = rados_aio_stat(rs->io, refs[base + issued].oid, comp[issued],
						   &psize[issued], &pmtime[issued]);
				if (e < 0)
					rados_aio_release(comp[issued]);
			}
			if (e < 0) {
				r = e;
				break;
			}
		}
		for (size_t j = 0; j < issued; j++) {
			struct img_ref *ref = &refs[base + j];
			int e;

			rados_aio_wait_for_complete(comp[j]);
			e = rados_aio_get_return_value(comp[j]);
			if (e == 0)
				ref->ver = rados_aio_get_version(comp[j]);
			else if (e == -ENOENT)
				ref->err = -ENOENT;   /* removed since the listing: not shown */
			else if (r == 0)
				r = e;
			rados_aio_release(comp[j]);
		}
	}
	if (r < 0)
		goto fail;
	qsort(refs, n, sizeof(*refs), cmp_ref_oid);
	*out = refs;
	*nout = n;
	return 0;
fail:
	refs_free(refs, n);
	return r;
}

static const char *cache_key_id(const struct img_ref *ref)
{
	return *ref->id ? ref->id : ref->oid;
}

static int cmp_snap_id(const void *a, const void *b)
{
	uint64_t x = ((const struct rbd_snap_meta *)a)->id, y = ((const struct rbd_snap_meta *)b)->id;

	return x < y ? -1 : x > y;
}

/* Open one image read-only and read what the listing shows of it. */
static int load_meta(struct rbd_store *rs, struct img_ref *ref)
{
	struct rbd_image_meta *m;
	rbd_image_t img = NULL;
	rbd_snap_info_t *si = NULL;
	struct timespec ts;
	int r, max = 16, n = 0;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->refs = 1;
	m->id = strdup(cache_key_id(ref));
	m->v1 = !*ref->id;
	m->name = strdup(ref->name);
	m->header_ver = ref->ver;
	if (!m->id || !m->name) {
		r = -ENOMEM;
		goto out;
	}
	if (*ref->id)
		r = rbd_open_by_id_read_only(rs->io, ref->id, &img, NULL);
	else
		r = rbd_open_read_only(rs->io, ref->name, &img, NULL);
	if (r < 0)
		goto out;
	if ((r = rbd_get_size(img, &m->size)) < 0)
		goto out;
	if (rbd_get_create_timestamp(img, &ts) == 0)
		m->ctime = ts.tv_sec;
	if (rbd_get_modify_timestamp(img, &ts) == 0)
		m->mtime = ts.tv_sec;
	if (asprintf(&m->ident, "%s", m->id) < 0) {
		m->ident = NULL;
		r = -ENOMEM;
		goto out;
	}
	for (;;) {
		si = calloc(max, sizeof(*si));
		if (!si) {
			r = -ENOMEM;
			goto out;
		}
		n = max;
		r = rbd_snap_list(img, si, &n);
		if (r == -ERANGE && n > max) {
			free(si);
			si = NULL;
			max = n;
			continue;
		}
		break;
	}
	if (r < 0)
		goto out;
	n = r;
	m->snaps = calloc(n ? n : 1, sizeof(*m->snaps));
	if (!m->snaps) {
		r = -ENOMEM;
		goto list_out;
	}
	for (int i = 0; i < n; i++) {
		rbd_snap_namespace_type_t nt = RBD_SNAP_NAMESPACE_TYPE_USER;
		struct rbd_snap_meta *sm = &m->snaps[m->nsnaps];

		if (rbd_snap_get_namespace_type(img, si[i].id, &nt) == 0 && nt != RBD_SNAP_NAMESPACE_TYPE_USER)
			continue;
		sm->id = si[i].id;
		sm->size = si[i].size;
		sm->name = strdup(si[i].name);
		if (rbd_snap_get_timestamp(img, si[i].id, &ts) == 0) {
			sm->mtime = ts.tv_sec;
			sm->mtime_nsec = (int32_t)ts.tv_nsec;
		}
		if (!sm->name || asprintf(&sm->ident, "%s@%" PRIu64, m->ident, sm->id) < 0) {
			free(sm->name);
			r = -ENOMEM;
			goto list_out;
		}
		m->nsnaps++;
	}
	qsort(m->snaps, m->nsnaps, sizeof(*m->snaps), cmp_snap_id);
	r = 0;
list_out:
	rbd_snap_list_end(si);
out:
	free(si);
	if (img)
		rbd_close(img);
	if (r < 0) {
		rbd_image_meta_put(m);
		return r;
	}
	ref->meta = m;
	return 0;
}

struct loader {
	struct rbd_store *rs;
	struct img_ref **todo;
	size_t ntodo, next;
	pthread_mutex_t lock;
};

static void *loader_thread(void *arg)
{
	struct loader *L = arg;

	for (;;) {
		size_t i;

		pthread_mutex_lock(&L->lock);
		i = L->next++;
		pthread_mutex_unlock(&L->lock);
		if (i >= L->ntodo)
			return NULL;
		L->todo[i]->err = load_meta(L->rs, L->todo[i]);
	}
}

static struct rbd_image_meta *cache_find(struct rbd_store *rs, const char *oid_id, const char *name)
{
	/* cache is sorted by id: a linear-ish bsearch on id, then the name must match */
	int lo = 0, hi = rs->ncache - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2, c = strcmp(rs->cache[mid]->id, oid_id);

		if (!c)
			return strcmp(rs->cache[mid]->name, name) ? NULL : rs->cache[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

static int cmp_meta_id(const void *a, const void *b)
{
	const struct rbd_image_meta *x = *(struct rbd_image_meta *const *)a, *y = *(struct rbd_image_meta *const *)b;
	int c = strcmp(x->id, y->id);

	return c ? c : strcmp(x->name, y->name);
}

static int cmp_meta_name(const void *a, const void *b)
{
	return strcmp((*(struct rbd_image_meta *const *)a)->name, (*(struct rbd_image_meta *const *)b)->name);
}

void rbd_cache_free(struct rbd_store *rs)
{
	for (int i = 0; i < rs->ncache; i++)
		rbd_image_meta_put(rs->cache[i]);
	free(rs->cache);
	rs->cache = NULL;
	rs->ncache = 0;
}

void rbd_listing_free(struct store *s, struct store_listing *l)
{
	struct rbd_listing_priv *p;

	(void)s;
	if (!l)
		return;
	p = l->priv;
	for (int i = 0; i < l->nvols; i++)
		free(l->vols[i].views);
	free(l->vols);
	if (p) {
		for (int i = 0; i < p->nimgs; i++)
			rbd_image_meta_put(p->imgs[i]);
		free(p->imgs);
		free(p);
	}
	free(l);
}

int rbd_scan(struct store *s, struct store_listing **out)
{
	struct rbd_store *rs = rbd_of(s);
	struct img_ref *refs = NULL, **todo = NULL;
	struct rbd_image_meta **metas = NULL;
	struct store_listing *l = NULL;
	struct rbd_listing_priv *p = NULL;
	size_t n = 0, ntodo = 0, nm = 0;
	int r;

	r = list_with_versions(rs, &refs, &n);
	if (r < 0) {
		vlog(LOG_ERR, "rbd:%s: cannot list the images: %s", s->name, strerror(-r));
		return r == -ENOENT ? -ENOENT : -EIO;
	}
	todo = calloc(n ? n : 1, sizeof(*todo));
	if (!todo) {
		r = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&rs->lock);
	for (size_t i = 0; i < n; i++) {
		struct rbd_image_meta *m;

		if (refs[i].err)
			continue;
		m = cache_find(rs, cache_key_id(&refs[i]), refs[i].name);
		if (m && m->header_ver == refs[i].ver) {
			meta_get(m);
			refs[i].meta = m;
		} else {
			todo[ntodo++] = &refs[i];
		}
	}
	pthread_mutex_unlock(&rs->lock);
	if (ntodo) {
		struct loader L = { .rs = rs, .todo = todo, .ntodo = ntodo };
		pthread_t th[OPEN_THREADS];
		int nth = ntodo < OPEN_THREADS ? (int)ntodo : OPEN_THREADS, started = 0;

		pthread_mutex_init(&L.lock, NULL);
		for (int i = 1; i < nth; i++)
			if (pthread_create(&th[started], NULL, loader_thread, &L) == 0)
				started++;
		loader_thread(&L);
		for (int i = 0; i < started; i++)
			pthread_join(th[i], NULL);
		pthread_mutex_destroy(&L.lock);
		for (size_t i = 0; i < ntodo; i++) {
			int e = todo[i]->err;

			if (e == -ENOENT || e == 0)
				continue;   /* removed since the listing */
			if (e == -ENOMEM) {
				r = e;
				goto out;
			}
			if (e == -ETIMEDOUT || e == -ESHUTDOWN || e == -ENOTCONN) {
				vlog(LOG_ERR, "rbd:%s: cannot open image %s: %s", s->name, todo[i]->name, strerror(-e));
				r = -EIO;
				goto out;
			}
			/* one broken image does not hide the others */
			vlog(LOG_WARNING, "rbd:%s: image %s (id %s) not shown: %s", s->name, todo[i]->name,
			     todo[i]->id, strerror(-e));
		}
	}
	metas = calloc(n ? n : 1, sizeof(*metas));
	l = calloc(1, sizeof(*l));
	p = calloc(1, sizeof(*p));
	if (!metas || !l || !p) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (refs[i].meta) {
			metas[nm++] = refs[i].meta;
			refs[i].meta = NULL;
		}
	/* the new cache: exactly what this scan saw */
	qsort(metas, nm, sizeof(*metas), cmp_meta_id);
	{
		struct rbd_image_meta **nc = calloc(nm ? nm : 1, sizeof(*nc));

		if (!nc) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < nm; i++) {
			meta_get(metas[i]);
			nc[i] = metas[i];
		}
		pthread_mutex_lock(&rs->lock);
		rbd_cache_free(rs);
		rs->cache = nc;
		rs->ncache = (int)nm;
		pthread_mutex_unlock(&rs->lock);
	}
	/* listing priv: by id (for changed); volumes: by name */
	p->imgs = metas;
	p->nimgs = (int)nm;
	metas = NULL;
	l->priv = p;
	l->vols = calloc(nm ? nm : 1, sizeof(*l->vols));
	if (!l->vols) {
		r = -ENOMEM;
		goto out;
	}
	{
		struct rbd_image_meta **byname = malloc((nm ? nm : 1) * sizeof(*byname));

		if (!byname) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(byname, p->imgs, nm * sizeof(*byname));
		qsort(byname, nm, sizeof(*byname), cmp_meta_name);
		for (size_t i = 0; i < nm; i++) {
			struct rbd_image_meta *m = byname[i];
			struct store_volume *v = &l->vols[l->nvols];

			v->views = calloc(1 + m->nsnaps, sizeof(*v->views));
			if (!v->views) {
				free(byname);
				r = -ENOMEM;
				goto out;
			}
			v->name = m->name;
			v->mtime = m->ctime;
			v->priv = m;
			v->nviews = 1 + m->nsnaps;
			/* used 0: st_blocks is counted when stat asks (fs/data_bytes.c,
			 * the reader's changed(NULL): `rbd diff`), never here, so a
			 * scan diffs no image */
			v->views[0] = (struct store_view){
				.name = "current", .ident = m->ident, .size = m->size,
				.mtime = m->mtime, .used = 0, .snapshot = false, .priv = NULL,
			};
			for (int k = 0; k < m->nsnaps; k++)
				v->views[1 + k] = (struct store_view){
					.name = m->snaps[k].name, .ident = m->snaps[k].ident,
					.size = m->snaps[k].size, .mtime = m->snaps[k].mtime,
					.mtime_nsec = m->snaps[k].mtime_nsec,
					.used = 0, .snapshot = true, .priv = &m->snaps[k],
				};
			l->nvols++;
		}
		free(byname);
	}
	{
		/* statfs: the cluster's raw space (one monitor round trip per scan). */
		struct rados_cluster_stat_t cs;

		if (rados_cluster_stat(rs->cluster, &cs) == 0) {
			l->capacity = cs.kb * 1024;
			l->available = cs.kb_avail * 1024;
		}
	}
	*out = l;
	l = NULL;
	p = NULL;
	r = 0;
out:
	if (l) {
		if (!l->priv)
			free(p);
		rbd_listing_free(s, l);
	} else {
		free(p);
	}
	if (metas) {
		for (size_t i = 0; i < nm; i++)
			rbd_image_meta_put(metas[i]);
		free(metas);
	}
	free(todo);
	refs_free(refs, n);
	return r;
}

int rbd_changed(struct store *s, const struct store_listing *l)
{
	struct rbd_store *rs = rbd_of(s);
	const struct rbd_listing_priv *p = l ? l->priv : NULL;
	struct img_ref *refs = NULL;
	size_t n = 0, k = 0;
	int r, changed = 0;

	if (!p)
		return 1;
	r = list_with_versions(rs, &refs, &n);
	if (r < 0) {
		int64_t pid = rados_pool_lookup(rs->cluster, rs->pool);

		if (pid == -ENOENT) {
			if (rs->last_changed_err != -ENOENT)
				vlog(LOG_ERR, "rbd:%s: the pool is gone", s->name);
			rs->last_changed_err = -ENOENT;
			return -ENOENT;
		}
		if (rs->last_changed_err != r)
			vlog(LOG_WARNING, "rbd:%s: cannot check for changes: %s", s->name, strerror(-r));
		rs->last_changed_err = r;
		return 0;
	}
	if (rs->last_changed_err)
		vlog(LOG_NOTICE, "rbd:%s: the cluster answers again", s->name);
	rs->last_changed_err = 0;
	/* refs sorted by header oid; the listing's images by id: compare as sets */
	for (size_t i = 0; i < n && !changed; i++) {
		const struct rbd_image_meta *m;
		int lo = 0, hi = p->nimgs - 1, found = 0;

		if (refs[i].err)
			continue;
		k++;
		while (lo <= hi) {
			int mid = (lo + hi) / 2, c = strcmp(p->imgs[mid]->id, cache_key_id(&refs[i]));

			if (!c) {
				/* same id: also the same name (rename) and header version */
				for (int j = mid; j >= 0 && !strcmp(p->imgs[j]->id, p->imgs[mid]->id); j--) {
					m = p->imgs[j];
					if (!strcmp(m->name, refs[i].name) && m->header_ver == refs[i].ver)
						found = 1;
				}
				for (int j = mid + 1; j < p->nimgs && !strcmp(p->imgs[j]->id, p->imgs[mid]->id); j++) {
					m = p->imgs[j];
					if (!strcmp(m->name, refs[i].name) && m->header_ver == refs[i].ver)
						found = 1;
				}
				break;
			}
			if (c < 0)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		if (!found)
			changed = 1;
	}
	if (!changed && k != (size_t)p->nimgs)
		changed = 1;
	refs_free(refs, n);
	return changed;
}
