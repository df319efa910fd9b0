/*
 * rbd_store: the RBD store's constructor and store_ops table.
 *
 * Source "rbd:<pool>" or "rbd:<pool>/<namespace>" (the "rbd:" prefix is
 * optional here). The store's top-level directory is the pool name, or
 * "<pool>-<namespace>" with a namespace.
 *
 * recover() has nothing to do: every snapshot operation is a single atomic
 * cluster operation (see rbd_snap.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "rbd/rbd.h"

static int rbd_recover(struct store *s)
{
	(void)s;
	return 0;
}

static void rbd_close_store(struct store *s)
{
	struct rbd_store *rs = rbd_of(s);

	if (!s)
		return;
	rbd_cache_free(rs);
	if (rs->io)
		rados_ioctx_destroy(rs->io);
	if (rs->cluster)
		rados_shutdown(rs->cluster);
	pthread_mutex_destroy(&rs->lock);
	free(rs->pool);
	free(rs->ns);
	free(s->name);
	free(rs);
}

static const struct store_ops rbd_ops = {
	.kind = "rbd",
	.scan = rbd_scan,
	.listing_free = rbd_listing_free,
	.changed = rbd_changed,
	.open_view = rbd_open_view,
	.snapshot_take = rbd_snapshot_take,
	.snapshot_remove = rbd_snapshot_remove,
	.recover = rbd_recover,
	.close = rbd_close_store,
};

static bool name_ok(const char *s)
{
	return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

int rbd_store_open(const char *spec, const struct store_config *cfg, struct store **out)
{
	struct rbd_store *rs;
	const char *slash;
	int r;

	if (!strncmp(spec, "rbd:", 4))
		spec += 4;
	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	pthread_mutex_init(&rs->lock, NULL);
	slash = strchr(spec, '/');
	rs->pool = slash ? strndup(spec, slash - spec) : strdup(spec);
	rs->ns = strdup(slash ? slash + 1 : "");
	if (!rs->pool || !rs->ns) {
		r = -ENOMEM;
		goto fail;
	}
	if (!name_ok(rs->pool) || (slash && !name_ok(rs->ns))) {
		vlog(LOG_ERR, "rbd:%s: not a pool or pool/namespace", spec);
		r = -EINVAL;
		goto fail;
	}
	if (*rs->ns)
		r = asprintf(&rs->base.name, "%s-%s", rs->pool, rs->ns);
	else
		r = asprintf(&rs->base.name, "%s", rs->pool);
	if (r < 0) {
		rs->base.name = NULL;
		r = -ENOMEM;
		goto fail;
	}
	rs->base.ops = &rbd_ops;
	rs->base.cfg = cfg;
	rs->base.priv = rs;
	r = rbd_conn_open(cfg, rs->pool, rs->ns, &rs->cluster, &rs->io);
	if (r < 0)
		goto fail;
	*out = &rs->base;
	return 0;
fail:
	rbd_close_store(&rs->base);
	return r;
}
