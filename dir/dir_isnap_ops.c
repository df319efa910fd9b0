/*
 * dir_isnap_ops: mkdir/rmdir as qcow2 internal snapshots (`qemu-img
 * snapshot -c` / `-d`), for every qcow2 volume that is not a Proxmox
 * volume chain. The table and refcount work is the engine's
 * (chain/qcow2_snapshot.h: qemu's write ordering, so a crash can leak
 * clusters but never leaves metadata pointing at freed ones); this file
 * adds the intent file and recovery around it.
 *
 *   intent "isnap-create <snap>"       then qcow2_snapshot_create
 *   intent "isnap-delete <snap> <id>"  then qcow2_snapshot_delete
 *   intent removed
 * Recovery: a create either reached its header switch (the snapshot is
 * there: done) or not (undone); a delete whose entry is still in the table
 * is run again. Then qcow2_reclaim gives back every cluster the crash
 * leaked, so `qemu-img check` is clean. An image someone has opened for
 * writing since the crash (a VM started) is left alone, intent kept.
 */
#include "dir/dir_snapshot.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/qcow2_snapshot.h"
#include "common/crash.h"
#include "common/log.h"

static int vol_paths(const struct store_volume *vol, struct dir_op_paths *n)
{
	const struct dir_vpriv *vp = vol->priv;
	const char *base = strrchr(vp->rel, '/');

	return dir_op_paths(n, vp->dir, base ? base + 1 : vp->rel);
}

static int write_intent(struct store *s, const struct dir_op_paths *n, const char *text)
{
	struct dir_store_priv *p = s->priv;

	return dir_write_file_atomic(p->rootfd, n->intent, text, strlen(text));
}

int dir_isnap_take(struct dir_op *op, const struct store_volume *vol, const char *snap)
{
	struct store *s = op->s;
	struct dir_op_paths n;
	struct qcow2_snapshot_list sl;
	struct layer_io *io;
	char text[256];
	int rc;

	if ((rc = vol_paths(vol, &n)))
		return rc;
	if (dir_exists(op->p->rootfd, n.intent)) {
		vlog(LOG_ERR, "%s/%s: an unfinished snapshot operation is in the way: remount to recover it",
		     s->name, n.vol);
		return -EBUSY;
	}
	if ((rc = file_io_open_grow(op->p->rootfd, s->name, n.vol, &io)))
		return rc == -ENOENT ? rc : -EIO;
	rc = qcow2_snapshot_list(io, &sl);
	if (rc == 0 && qcow2_snapshot_find(&sl, snap) >= 0)
		rc = -EEXIST;
	qcow2_snapshot_list_free(&sl);
	snprintf(text, sizeof(text), "isnap-create %s\n", snap);
	if (rc == 0)
		rc = write_intent(s, &n, text);
	if (rc) {
		layer_close(io);
		return rc;
	}
	crash_point("dir-isnap-create-intent");
	rc = qcow2_snapshot_create(io, snap, QCOW2_SNAP_GROW);
	if (rc == 0)
		rc = layer_flush(io);
	layer_close(io);
	if (rc) {
		vlog(LOG_ERR, "%s/%s: creating internal snapshot %s failed: %s", s->name, n.vol, snap,
		     strerror(-rc));
		/* The image reads as before; recovery reclaims what the attempt leaked. */
		return rc == -ENOSPC || rc == -EFBIG ? (rc == -EFBIG ? -ENOSPC : rc) : -EIO;
	}
	crash_point("dir-isnap-create-done");
	if (dir_intent_clear(s, &n))
		vlog(LOG_WARNING, "%s/%s: intent file left behind; the next mount clears it", s->name, n.vol);
	vlog(LOG_NOTICE, "%s/%s: took internal snapshot %s", s->name, n.vol, snap);
	return 0;
}

int dir_isnap_remove(struct dir_op *op, const struct store_volume *vol, int view)
{
	struct store *s = op->s;
	const struct dir_wpriv *w = vol->views[view].priv;
	struct dir_op_paths n;
	struct qcow2_snapshot_list sl;
	struct layer_io *io;
	char text[512];
	int rc, i;

	if ((rc = vol_paths(vol, &n)))
		return rc;
	if (dir_exists(op->p->rootfd, n.intent)) {
		vlog(LOG_ERR, "%s/%s: an unfinished snapshot operation is in the way: remount to recover it",
		     s->name, n.vol);
		return -EBUSY;
	}
	if ((rc = file_io_open_grow(op->p->rootfd, s->name, n.vol, &io)))
		return rc == -ENOENT ? rc : -EIO;
	rc = qcow2_snapshot_list(io, &sl);
	i = rc == 0 ? qcow2_snapshot_find(&sl, w->snap) : -1;
	if (rc == 0 && i < 0)
		rc = -ENOENT;
	if (rc == 0) {
		snprintf(text, sizeof(text), "isnap-delete %s %s\n", w->snap, sl.s[i].id);
		rc = write_intent(s, &n, text);
	}
	qcow2_snapshot_list_free(&sl);
	if (rc) {
		layer_close(io);
		return rc;
	}
	crash_point("dir-isnap-delete-intent");
	rc = qcow2_snapshot_delete(io, w->snap, QCOW2_SNAP_GROW);
	if (rc == 0)
		rc = layer_flush(io);
	layer_close(io);
	if (rc) {
		vlog(LOG_ERR, "%s/%s: deleting internal snapshot %s failed: %s", s->name, n.vol, w->snap,
		     strerror(-rc));
		return -EIO;
	}
	crash_point("dir-isnap-delete-done");
	if (dir_intent_clear(s, &n))
		vlog(LOG_WARNING, "%s/%s: intent file left behind; the next mount clears it", s->name, n.vol);
	vlog(LOG_NOTICE, "%s/%s: deleted internal snapshot %s", s->name, n.vol, w->snap);
	return 0;
}

int dir_recover_isnap(struct store *s, const struct dir_op_paths *n, char *intent)
{
	struct dir_store_priv *p = s->priv;
	struct qcow2_snapshot_list sl;
	struct qcow2_check_result r;
	struct layer_io *io;
	char kind[32], snap[300], id[64] = "";
	int rc, i;

	if (sscanf(intent, "%31s %299s %63s", kind, snap, id) < 2)
		return 1;
	if (strcmp(kind, "isnap-create") && strcmp(kind, "isnap-delete"))
		return 1;
	if (!dir_exists(p->rootfd, n->vol)) {
		vlog(LOG_NOTICE, "%s/%s: interrupted snapshot operation on a volume that is gone: dropping it",
		     s->name, n->vol);
		return dir_intent_clear(s, n);
	}
	if ((rc = dir_file_busy(s, n->vol)))
		return rc;
	if ((rc = file_io_open_grow(p->rootfd, s->name, n->vol, &io)))
		return rc;
	rc = qcow2_snapshot_list(io, &sl);
	i = rc == 0 ? qcow2_snapshot_find(&sl, snap) : -1;
	if (!strcmp(kind, "isnap-create")) {
		vlog(LOG_NOTICE, "%s/%s: interrupted internal snapshot %s: %s", s->name, n->vol, snap,
		     i >= 0 ? "it was taken" : "it was not taken");
	} else if (rc == 0 && i >= 0 && !strcmp(sl.s[i].id, id)) {
		vlog(LOG_NOTICE, "%s/%s: finishing interrupted deletion of internal snapshot %s", s->name,
		     n->vol, snap);
		rc = qcow2_snapshot_delete(io, snap, QCOW2_SNAP_GROW);
	} else if (rc == 0) {
		vlog(LOG_NOTICE, "%s/%s: interrupted deletion of internal snapshot %s: it was deleted",
		     s->name, n->vol, snap);
	}
	qcow2_snapshot_list_free(&sl);
	if (rc == 0) {
		rc = qcow2_reclaim(io, QCOW2_SNAP_GROW, &r);
		if (rc == 0 && (r.leaks || r.copied_errors))
			vlog(LOG_NOTICE, "%s/%s: reclaimed %" PRIu64 " leaked clusters, fixed %" PRIu64
			     " COPIED flags", s->name, n->vol, r.leaked_clusters_freed, r.copied_fixed);
	}
	if (rc == 0)
		rc = layer_flush(io);
	layer_close(io);
	if (rc)
		return rc;
	return dir_intent_clear(s, n);
}
