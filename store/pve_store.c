/*
 * pve_store: the wrapper (see pve_store.h). It forwards every operation to
 * the store it wraps, passing that store, so the inner store never sees
 * the wrapper; only snapshot_take, snapshot_remove and recover add the
 * cluster rules.
 */
#include "store/pve_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "store/pve_cluster.h"
#include "store/store_registry.h"

struct pve_store {
	struct store base;        /* first: a struct store * is a struct pve_store * */
	struct store_ops ops;
	struct store *inner;
	char storeid[128];
	bool cluster_lock;        /* a shared LVM/directory storage */
	struct store_config *owned_cfg;
};

static struct pve_store *of(struct store *s)
{
	return (struct pve_store *)s;
}

static int w_scan(struct store *s, struct store_listing **out)
{
	struct store *in = of(s)->inner;

	return in->ops->scan(in, out);
}

static void w_listing_free(struct store *s, struct store_listing *l)
{
	struct store *in = of(s)->inner;

	in->ops->listing_free(in, l);
}

static int w_changed(struct store *s, const struct store_listing *l)
{
	struct store *in = of(s)->inner;

	return in->ops->changed(in, l);
}

static int w_open_view(struct store *s, const struct store_listing *l, const struct store_volume *vol,
		       const struct store_view *view, struct view_reader **out)
{
	struct store *in = of(s)->inner;

	return in->ops->open_view(in, l, vol, view, out);
}

static bool read_only(const struct store *in)
{
	return in->cfg && in->cfg->read_only;
}

static int cluster_lock(struct pve_store *ps, struct pve_cfs_lock *lk, bool no_cluster_ok)
{
	memset(lk, 0, sizeof(*lk));
	if (!ps->cluster_lock)
		return 0;
	return pve_cfs_lock_storage(ps->storeid, no_cluster_ok, lk) < 0 ? -EBUSY : 0;
}

static int guarded(struct store *s, const char *volume, const char *snap, const struct store_progress *p,
		   bool take)
{
	struct pve_store *ps = of(s);
	struct store *in = ps->inner;
	struct pve_cfs_lock lk;
	int vmfd, rc;

	if (read_only(in))
		return take ? in->ops->snapshot_take(in, volume, snap, p)
			    : in->ops->snapshot_remove(in, volume, snap, p);
	if ((rc = pve_vm_guard_begin(s->name, volume, &vmfd)) < 0)
		return rc;
	rc = cluster_lock(ps, &lk, in->cfg && in->cfg->shared_snapshots);
	if (rc == 0) {
		rc = take ? in->ops->snapshot_take(in, volume, snap, p)
			  : in->ops->snapshot_remove(in, volume, snap, p);
		pve_cfs_unlock(&lk);
	}
	pve_vm_guard_end(vmfd);
	return rc;
}

static int w_take(struct store *s, const char *volume, const char *snap, const struct store_progress *p)
{
	return guarded(s, volume, snap, p, true);
}

static int w_remove(struct store *s, const char *volume, const char *snap, const struct store_progress *p)
{
	return guarded(s, volume, snap, p, false);
}

/* Recovery changes the storage's metadata too: under the cluster lock
 * when there is a cluster (without one, as before: the local flock). */
static int w_recover(struct store *s)
{
	struct pve_store *ps = of(s);
	struct store *in = ps->inner;
	struct pve_cfs_lock lk;
	int rc;

	if (read_only(in))
		return in->ops->recover(in);
	if (cluster_lock(ps, &lk, true) < 0) {
		vlog(LOG_WARNING, "storage %s: interrupted snapshot operations not looked for: the "
		     "cluster lock cannot be had", ps->storeid);
		return -EBUSY;
	}
	rc = in->ops->recover(in);
	pve_cfs_unlock(&lk);
	return rc;
}

static void w_close(struct store *s)
{
	struct pve_store *ps = of(s);

	ps->inner->ops->close(ps->inner);
	if (ps->owned_cfg) {
		store_registry_options_free(ps->owned_cfg);
		free(ps->owned_cfg);
	}
	free(s->name);
	free(ps);
}

int pve_store_wrap(struct store *inner, const struct pve_store_info *info, struct store **out)
{
	struct pve_store *ps = calloc(1, sizeof(*ps));
	const struct store_ops *io = inner->ops;

	if (ps)
		ps->base.name = strdup(info->name ? info->name : inner->name);
	if (!ps || !ps->base.name) {
		free(ps);
		inner->ops->close(inner);
		return -ENOMEM;
	}
	ps->inner = inner;
	ps->owned_cfg = info->owned_cfg;
	snprintf(ps->storeid, sizeof(ps->storeid), "%s", info->storeid ? info->storeid : "");
	ps->cluster_lock = info->shared && ps->storeid[0] && strcmp(io->kind, "rbd");
	ps->ops = (struct store_ops){
		.kind = io->kind,
		.scan = w_scan,
		.listing_free = w_listing_free,
		.changed = w_changed,
		.open_view = w_open_view,
		.snapshot_take = io->snapshot_take ? w_take : NULL,
		.snapshot_remove = io->snapshot_remove ? w_remove : NULL,
		.recover = io->recover ? w_recover : NULL,
		.close = w_close,
	};
	ps->base.ops = &ps->ops;
	ps->base.cfg = inner->cfg;
	ps->base.priv = NULL;
	*out = &ps->base;
	return 0;
}
