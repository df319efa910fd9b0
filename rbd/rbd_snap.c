/*
 * rbd_snap: mkdir and rmdir on an RBD store, as Proxmox VE's RBD plugin
 * (RBDPlugin.pm) does them:
 *
 *   mkdir <image>/<snap>   rbd snap create <pool>/<image>@<snap>
 *   rmdir <image>/<snap>   if the snapshot is protected: rbd snap unprotect
 *                          (refused with EBUSY, clones named in the log,
 *                          when clones still read through it), then
 *                          rbd snap rm
 *
 * Each step is one atomic cluster operation: there is nothing for
 * recover() to finish after a crash (an unprotected snapshot that a crash
 * kept from being removed is an ordinary snapshot, and rmdir again removes
 * it). A user without write caps gets EACCES. The checks every store
 * shares (read-only, "current", the name rule) are the caller's
 * (store/snapshot_rules.h): fs/ and rbdcat apply them before these run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "rbd/rbd.h"

static int fail(struct store *s, const char *what, const char *volume, const char *snap, int r)
{
	int e = rbd_errno(r);

	if (e == -EACCES)
		vlog(LOG_ERR, "rbd:%s: %s %s@%s: permission denied (client.%s lacks write caps on the pool?)",
		     s->name, what, volume, snap, rbd_user(s->cfg));
	else if (e == -EIO || e == -ENOSPC)
		vlog(LOG_ERR, "rbd:%s: %s %s@%s: %s", s->name, what, volume, snap, strerror(-r));
	return e;
}

static int open_rw(struct store *s, const char *volume, rbd_image_t *img)
{
	int r = rbd_open(rbd_of(s)->io, volume, img, NULL);

	if (r == -ENOENT)
		return -ENOENT;
	return r;
}

int rbd_snapshot_take(struct store *s, const char *volume, const char *snap,
		      const struct store_progress *p)
{
	rbd_image_t img;
	int r;

	(void)p; /* read-only, "current", the name rule: store_snapshot_check, by the caller */
	r = open_rw(s, volume, &img);
	if (r < 0)
		return r == -ENOENT ? -ENOENT : fail(s, "snap create", volume, snap, r);
	r = rbd_snap_create(img, snap);
	rbd_close(img);
	if (r < 0)
		return r == -EEXIST ? -EEXIST : fail(s, "snap create", volume, snap, r);
	vlog(LOG_INFO, "rbd:%s: snapshot %s@%s created", s->name, volume, snap);
	return 0;
}

/* Log the clones that read through volume@snap; 1 if there is any, 0 if none, -errno. */
static int log_children(struct store *s, rbd_image_t img, const char *volume, const char *snap)
{
	rbd_linked_image_spec_t *v = NULL;
	size_t max = 16, n;
	int r;

	r = rbd_snap_set(img, snap);
	if (r < 0)
		return r;
	for (;;) {
		free(v);
		v = calloc(max, sizeof(*v));
		if (!v) {
			r = -ENOMEM;
			break;
		}
		n = max;
		r = rbd_list_children3(img, v, &n);
		if (r == -ERANGE && n > max) {
			max = n;
			continue;
		}
		break;
	}
	if (r >= 0) {
		char list[1024] = "";
		size_t used = 0;

		for (size_t i = 0; i < n && used < sizeof(list) - 1; i++) {
			int k = snprintf(list + used, sizeof(list) - used, "%s%s/%s%s%s%s", i ? ", " : "",
					 v[i].pool_name, v[i].pool_namespace && *v[i].pool_namespace ? v[i].pool_namespace : "",
					 v[i].pool_namespace && *v[i].pool_namespace ? "/" : "", v[i].image_name,
					 v[i].trash ? " (in the trash)" : "");
			if (k < 0)
				break;
			used += (size_t)k;
		}
		if (used >= sizeof(list))
			strcpy(list + sizeof(list) - 5, "...");
		if (n)
			vlog(LOG_ERR, "rbd:%s: rmdir %s/%s: the snapshot is protected and has %zu clone%s: %s",
			     s->name, volume, snap, n, n == 1 ? "" : "s", list);
		rbd_linked_image_spec_list_cleanup(v, n);
		r = n ? 1 : 0;
	}
	free(v);
	rbd_snap_set(img, NULL);
	return r;
}

int rbd_snapshot_remove(struct store *s, const char *volume, const char *snap,
			const struct store_progress *p)
{
	rbd_image_t img;
	int prot = 0, r;

	(void)p; /* read-only, "current": store_snapshot_check, by the caller */
	r = open_rw(s, volume, &img);
	if (r < 0)
		return r == -ENOENT ? -ENOENT : fail(s, "snap rm", volume, snap, r);
	r = rbd_snap_is_protected(img, snap, &prot);
	if (r < 0) {
		r = r == -ENOENT ? -ENOENT : fail(s, "snap rm", volume, snap, r);
		goto out;
	}
	if (prot) {
		r = log_children(s, img, volume, snap);
		if (r > 0) {
			r = -EBUSY;
			goto out;
		}
		if (r < 0) {
			r = fail(s, "snap children", volume, snap, r);
			goto out;
		}
		r = rbd_snap_unprotect(img, snap);
		if (r == -EBUSY) {
			vlog(LOG_ERR, "rbd:%s: rmdir %s/%s: the snapshot is protected and in use by a clone",
			     s->name, volume, snap);
			goto out;
		}
		if (r < 0) {
			r = fail(s, "snap unprotect", volume, snap, r);
			goto out;
		}
		vlog(LOG_INFO, "rbd:%s: snapshot %s@%s unprotected", s->name, volume, snap);
	}
	r = rbd_snap_remove(img, snap);
	if (r < 0) {
		r = r == -ENOENT ? -ENOENT : r == -EBUSY ? -EBUSY : fail(s, "snap rm", volume, snap, r);
		goto out;
	}
	vlog(LOG_INFO, "rbd:%s: snapshot %s@%s removed", s->name, volume, snap);
out:
	rbd_close(img);
	return r;
}
