/*
 * dir_isnap_ops: mkdir/rmdir as qcow2 internal snapshots (`qemu-img
 * snapshot -c` / `-d`), for every qcow2 volume that is not a Proxmox
 * volume chain. The table and refcount work is the engine's
 * (chain/qcow2_snapshot.h: qemu's write ordering, so a crash can leak
 * clusters but never leaves metadata pointing at freed ones); this file
 * adds the intent file and recovery around it.
 *
 *   room reserved past the end of the file (an upper bound, dir_reserve.h)
 *   intent "isnap-create <snap>"       then qcow2_snapshot_create
 *   intent "isnap-delete <snap> <id>"  then qcow2_snapshot_delete
 *     -- point of no return: the header switch (the table names the
 *        snapshot, or no longer does) --
 *   unused room cut off, intent removed
 * A failure before the switch is undone at once: what it leaked reclaimed,
 * the room given back, the intent removed, the error returned. A failure
 * after it is finished at once (reclaim drops what a delete had not yet
 * dropped) and reported as success.
 * Recovery: a create either reached its header switch (the snapshot is
 * there: done) or not (undone); a delete whose entry is still in the table
 * is run again. Then qcow2_reclaim gives back every cluster the crash
 * leaked, so `qemu-img check` is clean. An image someone has opened for
 * writing since the crash (a VM started) is left alone, intent kept.
 */
#include "dir/dir_snapshot.h"
#include "dir/dir_reserve.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/qcow2_snapshot.h"
#include "common/check.h"
#include "common/crash.h"
#include "common/log.h"

static int vol_paths(const struct store_volume *vol, struct dir_op_paths *n)
{
	const struct dir_vpriv *vp = vol->priv;
	const char *base = strrchr(vp->rel, '/');

	return dir_op_paths(n, vp->dir, base ? base + 1 : vp->rel);
}

/*
 * Room: what a create or delete may allocate, an upper bound from the
 * header and the table: the L1 copy (create), the new table, refcount
 * blocks for those, and a refcount table half again as large. It is
 * reserved past the end of the file before the intent (dir_reserve.h), so
 * the operation's writes land in room it holds; what it did not use is cut
 * off afterwards.
 */
static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static int room_needed(struct layer_io *io, const struct qcow2_snapshot_list *sl, bool create,
		       uint64_t *bytes)
{
	uint8_t h[104];
	uint64_t cs, l1, rtc, order, rpb, n;
	int rc = layer_pread(io, h, sizeof(h), 0);

	if (rc)
		return rc;
	cs = 1ULL << (be(h + 20, 4) & 63);
	l1 = be(h + 36, 4);
	rtc = be(h + 56, 4);
	order = be(h + 4, 4) >= 3 ? be(h + 96, 4) : 4;
	if (cs < 512 || cs > (2u << 20) || order > 6)
		return -EIO;
	rpb = cs * 8 >> order;
	n = (sl->table_size + 1024 + 40 + QCOW2_SNAPSHOT_NAME_MAX + cs - 1) / cs + 1;
	if (create)
		n += (l1 * 8 + cs - 1) / cs;
	n += n / rpb + 2 + rtc + rtc / 2 + 1;
	*bytes = n * cs;
	return 0;
}

struct isnap_room {
	int fd;
	struct dir_reserve res;
};

/* Reserve the room before the intent: 0, or -ENOSPC / -EDQUOT with the file as before. */
static int room_take(struct store *s, const struct dir_op_paths *n, struct layer_io *io,
		     const struct qcow2_snapshot_list *sl, bool create, struct isnap_room *r)
{
	struct dir_store_priv *p = s->priv;
	uint64_t need;
	int rc = room_needed(io, sl, create, &need);

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	dir_reserve_begin(&r->res, -1);
	if (rc)
		return rc;
	r->fd = dir_openat(p->rootfd, n->vol, O_RDWR, 0);
	if (r->fd < 0)
		return r->fd;
	if ((rc = dir_reserve_begin(&r->res, r->fd)) || (rc = dir_reserve_range(&r->res, r->res.orig_size, need)) ||
	    (rc = dir_reserve_check(&r->res)) || (rc = crash_fail("dir-isnap-reserve"))) {
		vlog(LOG_ERR, "%s/%s: no room for the snapshot operation (up to %" PRIu64 " bytes): %s",
		     s->name, n->vol, need, strerror(-rc));
		dir_reserve_undo(&r->res);
	}
	return rc;
}

static void room_release(struct isnap_room *r)
{
	dir_reserve_free(&r->res);
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
}

/*
 * With the room taken: reopen the image (its size now takes in the
 * reserved room) and record the intent. On failure the room goes back and
 * nothing else was changed.
 */
static int isnap_begin(struct dir_op *op, const struct dir_op_paths *n, const struct intent *in,
		       struct isnap_room *room, struct layer_io **io)
{
	struct store *s = op->s;
	int rc = file_io_open_grow(op->p->rootfd, s->name, n->vol, io);

	if (rc == 0 && (rc = dir_intent_write(s, n, in)))
		layer_close(*io);
	if (rc) {
		dir_reserve_undo(&room->res);
		room_release(room);
		return rc;
	}
	VSTORFS_CHECK(dir_intent_holds(s, n, in));  /* dir_op.c (1) */
	return 0;
}

/*
 * After the operation (done = it reached its header switch): free what it
 * leaked, cut the file to its image end (never below its old size).
 * Undone: the reserved room goes back exactly when nothing past the old
 * end is in use.
 */
static int room_settle(struct store *s, const struct dir_op_paths *n, struct isnap_room *r, bool reclaim)
{
	struct dir_store_priv *p = s->priv;
	struct qcow2_check_result cr;
	struct layer_io *io;
	uint64_t end;
	int rc = 0;

	if (reclaim) {
		if ((rc = file_io_open(p->rootfd, s->name, n->vol, true, &io)))
			return rc;
		rc = qcow2_reclaim(io, 0, &cr);
		if (rc == 0)
			rc = layer_flush(io);
		layer_close(io);
		if (rc)
			return rc;
	}
	if ((rc = dir_image_end(s, n->vol, &end)))
		return rc;
	if (end <= r->res.orig_size)
		dir_reserve_undo(&r->res);
	else
		dir_reserve_trim(&r->res, end);
	return 0;
}

/* Is the snapshot (with that id, when id is given) in the table now? 1, 0 or <0. */
static int snap_present(struct store *s, const struct dir_op_paths *n, const char *snap, const char *id)
{
	struct dir_store_priv *p = s->priv;
	struct qcow2_snapshot_list sl;
	struct layer_io *io;
	int rc = file_io_open(p->rootfd, s->name, n->vol, false, &io), i;

	if (rc)
		return rc;
	rc = qcow2_snapshot_list(io, &sl);
	i = rc == 0 ? qcow2_snapshot_find(&sl, snap) : -1;
	if (rc == 0)
		rc = i >= 0 && (!id || !strcmp(sl.s[i].id, id));
	qcow2_snapshot_list_free(&sl);
	layer_close(io);
	return rc;
}

/*
 * A create or delete that failed: the table says whether its header switch
 * landed. Not landed: nothing happened; reclaim, give the room back, drop
 * the intent, the error stands. Landed (past the point of no return):
 * finish (reclaim frees what a delete had not yet dropped), report
 * success. If even that fails, the intent stays for the next operation or
 * mount, and the error stands.
 */
static int isnap_failed(struct store *s, const struct dir_op_paths *n, struct isnap_room *r, const char *snap,
			const char *id, bool create, int err)
{
	int present = snap_present(s, n, snap, id), rc;
	bool happened = present >= 0 && (create ? present == 1 : present == 0);

	if (present < 0 || (rc = room_settle(s, n, r, true)) || (rc = dir_intent_clear(s, n))) {
		vlog(LOG_ERR, "%s/%s: cannot settle the failed snapshot operation now: the next operation "
		     "or mount does", s->name, n->vol);
		return err;
	}
	if (happened) {
		vlog(LOG_NOTICE, "%s/%s: %s internal snapshot %s finished after all (%s came after the point "
		     "of no return)", s->name, n->vol, create ? "taking" : "deleting", snap, strerror(-err));
		return 0;
	}
	vlog(LOG_NOTICE, "%s/%s: undone: the image reads as before", s->name, n->vol);
	return err == -ENOSPC || err == -EDQUOT ? err : err == -EFBIG ? -ENOSPC : -EIO;
}

int dir_isnap_take(struct dir_op *op, const struct store_volume *vol, const char *snap)
{
	struct store *s = op->s;
	struct dir_op_paths n;
	struct qcow2_snapshot_list sl;
	struct isnap_room room = { .fd = -1 };
	struct layer_io *io;
	struct intent in = { .kind = INTENT_ISNAP_CREATE };
	int rc;

	dir_reserve_begin(&room.res, -1);
	if ((rc = vol_paths(vol, &n)))
		return rc;
	if (snprintf(in.snap, sizeof(in.snap), "%s", snap) >= (int)sizeof(in.snap))
		return -ENAMETOOLONG;
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
	if (rc == 0)
		rc = room_take(s, &n, io, &sl, true, &room);
	qcow2_snapshot_list_free(&sl);
	layer_close(io);
	if (rc) {
		room_release(&room);
		return rc;
	}
	if ((rc = isnap_begin(op, &n, &in, &room, &io)))
		return rc;
	crash_point("dir-isnap-create-intent");
	rc = crash_fail("dir-isnap-create");
	if (rc == 0)
		rc = qcow2_snapshot_create(io, snap, QCOW2_SNAP_GROW);
	if (rc == 0)
		rc = layer_flush(io);
	layer_close(io);
	if (rc) {
		vlog(LOG_ERR, "%s/%s: creating internal snapshot %s failed: %s", s->name, n.vol, snap,
		     strerror(-rc));
		rc = isnap_failed(s, &n, &room, snap, NULL, true, rc);
		room_release(&room);
		return rc;
	}
	crash_point("dir-isnap-create-done");
	room_settle(s, &n, &room, false);
	room_release(&room);
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
	struct isnap_room room = { .fd = -1 };
	struct layer_io *io;
	struct intent in = { .kind = INTENT_ISNAP_DELETE };
	int rc, i;

	dir_reserve_begin(&room.res, -1);
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
		if (snprintf(in.snap, sizeof(in.snap), "%s", w->snap) >= (int)sizeof(in.snap) ||
		    snprintf(in.id, sizeof(in.id), "%s", sl.s[i].id) >= (int)sizeof(in.id))
			rc = -ENAMETOOLONG;
		else
			rc = room_take(s, &n, io, &sl, false, &room);
	}
	qcow2_snapshot_list_free(&sl);
	layer_close(io);
	if (rc) {
		room_release(&room);
		return rc;
	}
	if ((rc = isnap_begin(op, &n, &in, &room, &io)))
		return rc;
	crash_point("dir-isnap-delete-intent");
	rc = crash_fail("dir-isnap-delete");
	if (rc == 0)
		rc = qcow2_snapshot_delete(io, w->snap, QCOW2_SNAP_GROW);
	if (rc == 0)
		rc = layer_flush(io);
	layer_close(io);
	if (rc) {
		vlog(LOG_ERR, "%s/%s: deleting internal snapshot %s failed: %s", s->name, n.vol, w->snap,
		     strerror(-rc));
		rc = isnap_failed(s, &n, &room, w->snap, in.id, false, rc);
		room_release(&room);
		return rc;
	}
	crash_point("dir-isnap-delete-done");
	room_settle(s, &n, &room, false);
	room_release(&room);
	if (dir_intent_clear(s, &n))
		vlog(LOG_WARNING, "%s/%s: intent file left behind; the next mount clears it", s->name, n.vol);
	vlog(LOG_NOTICE, "%s/%s: deleted internal snapshot %s", s->name, n.vol, w->snap);
	return 0;
}

int dir_recover_isnap(struct store *s, const struct dir_op_paths *n, const struct intent *in)
{
	struct dir_store_priv *p = s->priv;
	struct qcow2_snapshot_list sl;
	struct qcow2_check_result r;
	struct layer_io *io;
	const char *snap = in->snap, *id = in->id;
	int rc, i;

	if (in->kind != INTENT_ISNAP_CREATE && in->kind != INTENT_ISNAP_DELETE)
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
	if (in->kind == INTENT_ISNAP_CREATE) {
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
