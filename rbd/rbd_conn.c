/*
 * rbd_conn: one cluster connection per RBD store, configured so that
 * nothing waits forever:
 *
 *   client_mount_timeout   connecting to the monitors (the mount fails)
 *   rados_mon_op_timeout   a monitor command (pool lookups, snapshot ids)
 *   rados_osd_op_timeout   every OSD op: a read of a cluster that went away
 *                          fails with ETIMEDOUT (EIO to the reader) and the
 *                          next read, once the cluster is back, succeeds
 *
 * Each is set to our bound unless ceph.conf (or CEPH_ARGS) already chose one.
 * librbd's cache is off: `current` is written by other clients (the VM) and
 * must be read from the OSDs, and snapshot views have the kernel's page cache.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "rbd/rbd.h"

#define RBD_MOUNT_TIMEOUT "15"
#define RBD_MON_OP_TIMEOUT "30"
#define RBD_OSD_OP_TIMEOUT "30"

const char *rbd_user(const struct store_config *cfg)
{
	const char *id = rbd_opts_of(cfg)->id;

	return id && *id ? id : "admin";
}

int rbd_errno(int r)
{
	if (r >= 0)
		return r;
	switch (-r) {
	case EPERM:
	case EACCES:
		return -EACCES;
	case ENOENT:
	case EEXIST:
	case EINVAL:
	case EBUSY:
	case ENOSPC:
	case EROFS:
	case EOPNOTSUPP:
		return r;
	case EDQUOT:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

/* Set key to val unless the configuration already has a value other than librados' default. */
static int set_default(rados_t c, const char *key, const char *libdefault, const char *val)
{
	char cur[64];

	if (rados_conf_get(c, key, cur, sizeof(cur)) == 0 && strtod(cur, NULL) != strtod(libdefault, NULL))
		return 0;
	return rados_conf_set(c, key, val);
}

static double conf_seconds(rados_t c, const char *key)
{
	char cur[64];

	return rados_conf_get(c, key, cur, sizeof(cur)) == 0 ? strtod(cur, NULL) : 0;
}

int rbd_conn_open(const struct store_config *cfg, const char *pool, const char *ns,
		  rados_t *cluster, rados_ioctx_t *io)
{
	const struct rbd_opts *o = rbd_opts_of(cfg);
	const char *user = rbd_user(cfg);
	const char *conf = o->conf;
	rados_t c = NULL;
	rados_ioctx_t x = NULL;
	int r;

	r = rados_create(&c, user);
	if (r < 0) {
		vlog(LOG_ERR, "rbd:%s: cannot create a librados handle for client.%s: %s", pool, user,
		     strerror(-r));
		return r;
	}
	r = rados_conf_read_file(c, conf);
	if (r < 0) {
		vlog(LOG_ERR, "rbd:%s: cannot read the ceph configuration %s: %s", pool,
		     conf ? conf : "(librados' default search path: /etc/ceph/ceph.conf)", strerror(-r));
		goto fail;
	}
	rados_conf_parse_env(c, NULL);
	if (o->keyring && *o->keyring && (r = rados_conf_set(c, "keyring", o->keyring)) < 0) {
		vlog(LOG_ERR, "rbd:%s: keyring %s: %s", pool, o->keyring, strerror(-r));
		goto fail;
	}
	if (o->mon_host && (r = rados_conf_set(c, "mon_host", o->mon_host)) < 0) {
		vlog(LOG_ERR, "rbd:%s: monitors %s: %s", pool, o->mon_host, strerror(-r));
		goto fail;
	}
	if ((r = set_default(c, "client_mount_timeout", "300", RBD_MOUNT_TIMEOUT)) < 0 ||
	    (r = set_default(c, "rados_mon_op_timeout", "0", RBD_MON_OP_TIMEOUT)) < 0 ||
	    (r = set_default(c, "rados_osd_op_timeout", "0", RBD_OSD_OP_TIMEOUT)) < 0 ||
	    (r = rados_conf_set(c, "rbd_cache", "false")) < 0) {
		vlog(LOG_ERR, "rbd:%s: cannot set librados timeouts: %s", pool, strerror(-r));
		goto fail;
	}
	r = rados_connect(c);
	if (r < 0) {
		if (r == -ETIMEDOUT)
			vlog(LOG_ERR, "rbd:%s: no answer from the ceph monitors within %.0f s (config %s, client.%s)",
			     pool, conf_seconds(c, "client_mount_timeout"), conf ? conf : "default", user);
		else if (r == -EACCES || r == -EPERM)
			vlog(LOG_ERR, "rbd:%s: the ceph monitors refused client.%s (config %s): %s", pool, user,
			     conf ? conf : "default", strerror(-r));
		else
			vlog(LOG_ERR, "rbd:%s: cannot connect to the ceph cluster as client.%s (config %s%s%s): %s",
			     pool, user, conf ? conf : "default", o->keyring ? ", keyring " : "",
			     o->keyring ? o->keyring : "", strerror(-r));
		goto fail;
	}
	r = rados_ioctx_create(c, pool, &x);
	if (r < 0) {
		vlog(LOG_ERR, "rbd:%s: %s", pool, r == -ENOENT ? "no such pool" : strerror(-r));
		goto fail;
	}
	if (ns && *ns) {
		bool exists = false;

		r = rbd_namespace_exists(x, ns, &exists);
		if (r == 0 && !exists)
			r = -ENOENT;
		if (r < 0) {
			vlog(LOG_ERR, "rbd:%s/%s: %s", pool, ns,
			     r == -ENOENT ? "no such RBD namespace" : strerror(-r));
			goto fail;
		}
		rados_ioctx_set_namespace(x, ns);
	}
	*cluster = c;
	*io = x;
	return 0;
fail:
	if (x)
		rados_ioctx_destroy(x);
	rados_shutdown(c);
	return r;
}
