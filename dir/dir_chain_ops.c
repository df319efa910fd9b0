/*
 * dir_snapshot: mkdir/rmdir of snapshot views in a directory store, and
 * the recovery of interrupted ones.
 *
 * Two kinds of snapshot:
 *  - Proxmox volume chains (storage.cfg says "snapshot-as-volume-chain 1"
 *    for this path, or the volume already has snap-* layers): the volume
 *    file V becomes S = snap-<snap>-<V> and a fresh overlay backed by the
 *    bare name S (qcow2 v3, extended L2, 128 KiB clusters, metadata
 *    preallocated) takes V's name; rmdir merges S with its child C by
 *    commit (S then takes C's name) or rebase (C points at S's parent, S is
 *    removed), the file names Proxmox's own steps end in.
 *  - internal snapshots everywhere else (dir_isnap_ops.c).
 *
 * Crash safety. Files have no tags, so the intent goes into a file next to
 * the volume, ".vstorfs-intent-<V>.op", written atomically (tmp, fsync,
 * rename, fsync of the directory) before the first change and removed
 * (then the directory fsync'd) after the last. Every step in between is one
 * rename(2) or image writes ordered as qemu orders them, each made durable
 * before the next. A crash leaves the intent file; dir_recover() (run
 * before the first scan) reads it and, from what exists, finishes or undoes
 * the operation. The intent travels with the directory (a copied or
 * NFS-mounted store recovers on the next host that mounts it).
 *
 * Room. An operation that fails has not happened. Before the intent is
 * written, rmdir takes from the filesystem all the room its merge will
 * write into (dir_reserve.h: the clusters past the image end and the holes
 * of preallocated clusters written in place, fallocated), and checks the
 * target's refcount table reaches that far; mkdir writes everything that
 * takes room (the overlay, the taken-time sidecar) before its first rename.
 * A lack of room (ENOSPC, EDQUOT) is therefore met before the point of no
 * return and gives back exactly what was taken, removes the intent and
 * leaves every view as it was; the volume takes the next operation at once.
 *
 * Volume-chain mkdir (intent "mkdir-chain <snap> <time>"):
 *   A  T = .vstorfs-new-<V>.tmp holds the overlay backed by S, flushed,
 *      and the taken time recorded (.vstorfs-snaps-<V>)
 *   -- point of no return: the first rename --
 *   B  V renamed to S
 *   C  T renamed to V
 *   D  intent removed
 * A failure before B is undone (T removed, the time dropped, intent
 * removed). If C fails, B is renamed back and the mkdir undone; if that
 * rename back fails too, T and the intent stay (state "S and T, no V") and
 * mkdir returns the error: the next mount finishes the snapshot.
 * Recovery: T and V, no S (A): remove T, drop the time. S and T, no V (B):
 * rename T to V. S and V (C): record, done.
 *
 * Volume-chain rmdir (intent "rmdir-commit <snap> <S> <C>" or
 * "rmdir-rebase <snap> <S> <C> <backing string of S or ->"):
 *   commit: merge C's data into S; rename S over C (atomic).
 *           -- point of no return: the first write into S (S's view changes) --
 *   rebase: merge S's data into C; C's backing string set to S's;
 *           -- point of no return: the relink of C --
 *           unlink S.
 * A failure before the point of no return is undone: a rebase's copies into
 * C change no view (C read those bytes through S), so what a failed batch
 * leaked is reclaimed, the file cut back to its image end, the intent
 * removed, and rmdir returns the error. A failure past it (a disk error:
 * room was reserved) is finished at once, as recovery would, and rmdir
 * reports success only when that worked; otherwise the error is returned
 * and the next operation on the volume or the next mount finishes it. The
 * room a merge reserved and did not use is cut off after it.
 * Recovery: S gone: done. Otherwise commit again (a merge re-run changes no
 * byte any view reads) / rebase again unless C already points past S; a C
 * that reads through neither S nor (rebase) S's parent is left, logged.
 * The driver (store/snap_merge.c, its invariants (4)-(7)) runs this step
 * order, the points of no return and the failure handling with the steps
 * filled in dir_merge_steps below; the recovery rules are written once in
 * store/snap_recover.h. dir's point of no return for a commit is read as
 * the data phase having begun (snap_merge.begun).
 *
 * On a shared storage the merge (the data copy) runs with the cluster lock
 * released and the chain re-checked when it is taken back (rm_data_begin /
 * rm_data_end below); the qemu-server VM lock and the node-local storage
 * flock stay held throughout.
 */
#include "dir/dir_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "chain/merge.h"
#include "chain/qcow2_create.h"
#include "chain/qcow2_snapshot.h"
#include "chain/qcow2_writer.h"
#include "common/check.h"
#include "common/crash.h"
#include "common/log.h"
#include "store/pve_cluster.h"
#include "store/snap_merge.h"
#include "store/snap_recover.h"
#include "store/store.h"
#include "dir/dir_snapshot.h"
#include "dir/dir_reserve.h"

static const struct dir_wpriv *vinfo(const struct store_view *v)
{
	return v->priv;
}

/* ---- volume-chain mkdir ---- */

static int rename_noreplace(int rootfd, const char *from, const char *to)
{
	return dir_rename(rootfd, from, to, true);
}

/* Write the overlay for `backing` into the scratch file, durably. */
static int build_overlay(struct dir_op *op, const struct dir_op_paths *n, const char *backing,
			 uint64_t vsize, mode_t mode)
{
	struct layer_io *io;
	bool sparse = !strcmp(op->pc.preallocation, "off") && dir_overlay_sparse_size(vsize);
	uint64_t size = sparse ? dir_overlay_sparse_size(vsize) : qcow2_overlay_size(vsize);
	int fd, rc;

	if (!size)
		return -EINVAL;
	fd = dir_openat(op->p->rootfd, n->scratch, O_RDWR | O_CREAT | O_EXCL, mode & 0777);
	if (fd < 0)
		return fd;
	rc = ftruncate(fd, (off_t)size) ? -errno : 0;
	if (rc == 0 && (!strcmp(op->pc.preallocation, "falloc") || !strcmp(op->pc.preallocation, "full")))
		rc = fallocate(fd, 0, 0, (off_t)size) ? -errno : 0;
	if (rc == 0 && fsync(fd))
		rc = -errno;
	close(fd);
	if (rc == 0)
		rc = file_io_open(op->p->rootfd, op->s->name, n->scratch, true, &io);
	if (rc == 0) {
		rc = sparse ? dir_overlay_create_sparse(io, vsize, backing, "qcow2")
			    : qcow2_overlay_create(io, vsize, backing, "qcow2");
		layer_close(io);
	}
	if (rc == 0)
		rc = dir_fsync_parent(op->p->rootfd, n->scratch);
	if (rc) {
		vlog(LOG_ERR, "%s/%s: writing the overlay failed: %s", op->s->name, n->scratch, strerror(-rc));
		dir_unlink(op->p->rootfd, n->scratch);
	}
	return rc;
}

int dir_chain_take(struct dir_op *op, const struct store_volume *vol, const char *snap)
{
	const struct dir_wpriv *cur = vinfo(&vol->views[0]);
	struct dir_op_paths n;
	char srel[PATH_MAX], sbase[NAME_MAX + 1], *dir = dir_part(cur->rel);
	struct stat st;
	struct timespec ts;
	struct intent in;
	int64_t now;
	int rc;

	if (!dir)
		return -ENOMEM;
	/* The taken time in nanoseconds: the snapshot's ident, new when a name is reused. */
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	rc = dir_op_paths(&n, dir, vol->name);
	free(dir);
	if (rc || dir_op_snap_path(&n, snap, srel, sizeof(srel)) ||
	    pve_snapshot_file_name(vol->name, snap, sbase, sizeof(sbase)))
		return -EINVAL;
	if (dir_exists(op->p->rootfd, srel))
		return -EEXIST;
	if (dir_exists(op->p->rootfd, n.scratch) || dir_exists(op->p->rootfd, n.intent)) {
		vlog(LOG_ERR, "%s/%s: an unfinished snapshot operation is in the way: remount to recover it",
		     op->s->name, n.vol);
		return -EBUSY;
	}
	if (dir_fstatat(op->p->rootfd, n.vol, &st))
		return -ENOENT;
	in = (struct intent){ .kind = INTENT_MKDIR_CHAIN, .time = now };
	snprintf(in.snap, sizeof(in.snap), "%s", snap);
	if ((rc = dir_intent_write(op->s, &n, &in)))
		return rc;
	crash_point("dir-mkdir-intent");
	VSTORFS_CHECK(dir_intent_holds(op->s, &n, &in));  /* dir_op.c (1) */
	if ((rc = build_overlay(op, &n, sbase, vol->views[0].size, st.st_mode)))
		goto undo_intent;
	crash_point("dir-mkdir-written");
	/* The bookkeeping that takes room goes before the point of no return (the first
	 * rename): after it only the intent's removal is left, which frees room. */
	if ((rc = dir_snaptime_set(op->s, &n, snap, now)))
		goto undo_scratch;
	if ((rc = rename_noreplace(op->p->rootfd, n.vol, srel)))
		goto undo_times;
	crash_point("dir-mkdir-renamed");
	VSTORFS_CHECK(dir_intent_holds(op->s, &n, &in));  /* (3): past the point of no return */
	if ((rc = crash_fail("dir-mkdir-swap")) || (rc = rename_noreplace(op->p->rootfd, n.scratch, n.vol))) {
		int back = crash_fail("dir-mkdir-rename-back");

		if (!back)
			back = dir_rename(op->p->rootfd, srel, n.vol, true);
		if (back) {
			/* S and T, no V: exactly what recovery's second case needs (T renamed to V). */
			vlog(LOG_ERR, "%s/%s: renaming %s back failed too (%s): keeping %s and the intent; "
			     "the next mount finishes the snapshot", op->s->name, n.vol, srel,
			     strerror(-back), n.scratch);
			return rc;
		}
		goto undo_times;
	}
	crash_point("dir-mkdir-swapped");
	/* The snapshot exists now; what is left frees room, and recovery redoes it. */
	if (dir_intent_clear(op->s, &n))
		vlog(LOG_WARNING, "%s/%s: intent file left behind; the next mount finishes it",
		     op->s->name, n.vol);
	vlog(LOG_NOTICE, "%s/%s: took snapshot %s (layer %s)", op->s->name, n.vol, snap, srel);
	return 0;

undo_times:
	dir_snaptime_set(op->s, &n, snap, 0);
undo_scratch:
	dir_unlink(op->p->rootfd, n.scratch);
undo_intent:
	dir_intent_clear(op->s, &n);
	return rc;
}

/* ---- volume-chain rmdir ---- */

struct rm {
	char s[PATH_MAX], c[PATH_MAX], p[PATH_MAX];  /* p: "" when S has no backing */
	char *s_backing;                              /* S's backing string, NULL if none */
	struct snap_merge m;                          /* views, writer, how far the steps got */
	struct dir_reserve res;                       /* the room the merge takes in the target */
	bool suspended;                               /* the cluster lock is released for the merge */
	struct rm_ids *ids;                           /* the chain as measured, while suspended */
	struct store *st;
	const struct dir_op_paths *n;                 /* rmdir: the intent's paths, for undo/finish */
	struct intent *in;                            /* rmdir: the record the intent file holds */
	char label[PATH_MAX + 200];
};

/*
 * The merge outside the cluster lock. The merge writes only into a file of
 * the VM being changed (under its qemu-server lock, held throughout) and
 * changes no name in the storage, so on a shared storage it runs with the
 * cluster lock released (pmxcfs expires that lock at 120 s, Proxmox's own
 * locked work stops at 60 s). Before it, under the lock, the intent is on
 * disk and the chain is noted: every layer from C down, by name, device and
 * inode and backing string. After it the lock is taken again (10 s, as
 * ever) and the chain must be exactly that, and S read by no other image,
 * before the relink, renames and unlinks; otherwise the operation stops
 * with the intent left for recovery (-EIO; -EBUSY when the lock cannot be
 * had back).
 */
struct rm_layer {
	char *rel, *raw;      /* raw: the backing string, NULL when none */
	uint64_t dev, ino;
};

struct rm_ids {
	int n;
	struct rm_layer l[DIR_MAX_SNAPSHOTS + 2];
};

static void rm_ids_free(struct rm_ids *id)
{
	if (!id)
		return;
	for (int i = 0; i < id->n; i++) {
		free(id->l[i].rel);
		free(id->l[i].raw);
	}
	free(id);
}

static int rm_ids_take(struct store *s, const char *top, struct rm_ids **out)
{
	struct dir_store_priv *p = s->priv;
	struct rm_ids *id = calloc(1, sizeof(*id));
	char *rel = strdup(top);
	int rc = 0;

	*out = NULL;
	if (!id || !rel) {
		free(rel);
		free(id);
		return -ENOMEM;
	}
	while (rel && rc == 0) {
		struct rm_layer *l = &id->l[id->n];
		enum chain_layer_format fmt;
		char *next = NULL;
		struct stat st;
		uint64_t vs;

		if (id->n >= (int)(sizeof(id->l) / sizeof(id->l[0]))) {
			rc = -ELOOP;
			break;
		}
		if ((rc = dir_fstatat(p->rootfd, rel, &st)) ||
		    (rc = dir_probe_backing(s, rel, &next, &l->raw, &fmt, &vs)))
			break;
		l->rel = rel;
		l->dev = st.st_dev;
		l->ino = st.st_ino;
		id->n++;
		rel = next;
		if (l->raw && !next)
			rc = -EIO; /* a backing outside the store: the merge refused it already */
	}
	if (rc) {
		free(rel);
		rm_ids_free(id);
		return rc;
	}
	*out = id;
	return 0;
}

static bool rm_ids_same(const struct rm_ids *a, const struct rm_ids *b)
{
	if (a->n != b->n)
		return false;
	for (int i = 0; i < a->n; i++) {
		const struct rm_layer *x = &a->l[i], *y = &b->l[i];

		if (strcmp(x->rel, y->rel) || x->dev != y->dev || x->ino != y->ino ||
		    !x->raw != !y->raw || (x->raw && strcmp(x->raw, y->raw)))
			return false;
	}
	return true;
}

static void rm_release(struct rm *r)
{
	rm_ids_free(r->ids);
	r->ids = NULL;
	dir_reserve_free(&r->res);
	snap_merge_release(&r->m);
}

static int open_whole(struct store *s, const char *rel, struct chain **out)
{
	int rc = dir_open_chain(s, rel, NULL, CHAIN_FMT_QCOW2, out);

	if (rc == 0 && chain_is_broken(*out)) {
		vlog(LOG_ERR, "%s/%s: the chain below is broken: refusing to merge", s->name, rel);
		chain_put(*out);
		*out = NULL;
		rc = -EIO;
	}
	return rc;
}

static int rm_open_views(struct store *s, struct rm *r)
{
	int rc = open_whole(s, r->s, &r->m.view_s);

	if (!rc)
		rc = open_whole(s, r->c, &r->m.view_c);
	if (!rc && r->p[0])
		rc = open_whole(s, r->p, &r->m.view_p);
	return rc;
}

static int rm_open_writer(struct store *s, struct rm *r, bool commit)
{
	struct dir_store_priv *p = s->priv;
	struct layer_io *io;
	int rc = file_io_open(p->rootfd, s->name, commit ? r->s : r->c, true, &io);

	if (rc)
		return rc;
	return snap_merge_open_writer(&r->m, io, commit);
}

/*
 * Before a merge runs again: give back the clusters the interrupted run
 * allocated but never linked. A power cut can keep its refcount writes
 * (flushed with the data, before the L2 entries) and lose the L2 entries,
 * or keep the refcounts and lose the file growth they point into; a re-run
 * would then allocate past them (leaks qemu-img check reports) or find no
 * room (ENOSPC). The writer's target only: commit writes S, rebase C.
 */
static int rm_reclaim(struct store *s, struct rm *r, bool commit)
{
	struct dir_store_priv *p = s->priv;
	struct qcow2_check_result res;
	struct layer_io *io;
	int rc = file_io_open(p->rootfd, s->name, commit ? r->s : r->c, true, &io);

	if (rc)
		return rc;
	memset(&res, 0, sizeof(res));
	rc = qcow2_reclaim(io, QCOW2_SNAP_GROW, &res);
	if (rc == 0 && res.leaks)
		vlog(LOG_NOTICE, "%s: reclaimed %" PRIu64 " clusters the interrupted merge leaked", r->label,
		     res.leaked_clusters_freed);
	if (rc == 0)
		rc = layer_flush(io);
	layer_close(io);
	return rc;
}

static int reserve_host(void *ctx, uint64_t host, uint64_t len)
{
	return dir_reserve_range(ctx, host, len);
}

/*
 * Open the writer and take, before anything is written, all the room the
 * merge will write into: the clusters past the image end it may allocate
 * (the file grows; LVs do not) and the holes of the clusters it writes in
 * place (a preallocated image). No write of the merge can then fail for
 * lack of space or quota. -ENOSPC (or -EDQUOT) when the room is not there,
 * with the file exactly as before.
 */
static int rm_prepare(struct store *s, struct rm *r, bool commit)
{
	uint64_t need = 0, room = 0, end;
	int rc = rm_open_writer(s, r, commit);

	if (!rc)
		rc = commit ? merge_commit_need(r->m.view_c, r->m.w, &need)
			    : merge_rebase_need(r->m.view_c, r->m.view_s, r->m.view_p, r->m.w, &need);
	if (!rc && need > qcow2_writer_table_room(r->m.w)) {
		vlog(LOG_ERR, "%s: the merge needs %llu bytes more than the refcount table of %s reaches "
		     "(it is not grown)", r->label, (unsigned long long)need, commit ? r->s : r->c);
		rc = -ENOSPC;
	}
	if (rc)
		goto fail;
	room = qcow2_writer_room(r->m.w);
	end = r->m.wio->size - room;
	if ((rc = dir_reserve_begin(&r->res, file_io_fd(r->m.wio))) ||
	    (rc = merge_in_place(commit, r->m.view_c, r->m.view_s, r->m.view_p, r->m.w, reserve_host, &r->res)) ||
	    (rc = need ? dir_reserve_range(&r->res, end, need) : 0) || (rc = dir_reserve_check(&r->res)) ||
	    (rc = crash_fail("dir-rmdir-reserve"))) {
		vlog(LOG_ERR, "%s: no room for the merge (%llu bytes for new clusters): %s", r->label,
		     (unsigned long long)need, strerror(-rc));
		dir_reserve_undo(&r->res);
		goto fail;
	}
	if (need > room)
		rc = file_io_grow(r->m.wio, end + need);
	if (rc) {
		dir_reserve_undo(&r->res);
		goto fail;
	}
	return 0;
fail:
	dir_reserve_free(&r->res);
	snap_merge_close_writer(&r->m);
	return rc;
}

/* The merge is done: give back the room it reserved and did not use. */
static void rm_trim(struct rm *r)
{
	if (r->m.w && r->m.wio)
		dir_reserve_trim(&r->res, r->m.wio->size - qcow2_writer_room(r->m.w));
}

static bool other_children(struct store *s, const char *rel, const char *child);

/* Under the cluster lock, the intent on disk: note the chain, release the lock. */
static int rm_data_begin(struct store *s, struct rm *r)
{
	enum chain_layer_format fmt;
	char *below = NULL;
	uint64_t vs;
	int rc = dir_probe_backing(s, r->c, &below, NULL, &fmt, &vs);

	/* Never merge a C that does not read through S (a chain someone else changed). */
	if (rc == 0 && (!below || strcmp(below, r->s))) {
		vlog(LOG_ERR, "%s: %s does not read through %s (%s): not merging; leaving it for an "
		     "administrator", r->label, r->c, r->s, below ? below : "no backing file");
		rc = -EIO;
	}
	free(below);
	if (rc || !pve_cfs_lock_held())
		return rc;
	if ((rc = rm_ids_take(s, r->c, &r->ids)))
		return rc;
	r->suspended = pve_cfs_suspend("merging") > 0;
	return 0;
}

/* After the merge (rc its result): take the cluster lock back and check the chain is
 * the one noted, the writer's file still the target's. Any other outcome stops the
 * operation here, the intent left for recovery (m.stop). */
static int rm_data_end(struct store *s, struct rm *r, bool commit, int rc)
{
	struct rm_ids *now = NULL;
	uint64_t dev = 0, ino = 0;
	const char *target = commit ? r->s : r->c;
	bool same;
	int lrc;

	if (!r->suspended)
		return rc;
	r->suspended = false;
	if ((lrc = pve_cfs_resume())) {
		vlog(LOG_ERR, "%s: the cluster lock cannot be had back after the merge: the rest is left "
		     "to recovery (the next operation on the volume, or the next mount)", r->label);
		r->m.stop = true;
		return lrc;
	}
	lrc = rm_ids_take(s, r->c, &now);
	same = lrc == 0 && rm_ids_same(r->ids, now);
	if (same && r->m.wio && file_io_dev_ino(r->m.wio, &dev, &ino) == 0)
		for (int i = 0; i < now->n; i++)
			if (!strcmp(now->l[i].rel, target))
				same = now->l[i].dev == dev && now->l[i].ino == ino;
	rm_ids_free(now);
	if (same && other_children(s, r->s, r->c))
		same = false;
	if (!same) {
		vlog(LOG_ERR, "%s: the chain changed while merging outside the cluster lock: stopping "
		     "before any rename; the rest is left to recovery (the next operation on the volume, "
		     "or the next mount)", r->label);
		r->m.stop = true;
		return -EIO;
	}
	return rc;
}

/* ---- dir/'s platform steps for the merge driver (store/snap_merge.h (6)) ---- */

static int step_data_begin(void *ctx)
{
	struct rm *r = ctx;

	return rm_data_begin(r->st, r);
}

/* The relink is the point of no return: only under the lock, the chain checked (here). */
static int step_data_end(void *ctx, bool commit, int rc)
{
	struct rm *r = ctx;

	return rm_data_end(r->st, r, commit, rc);
}

static const char *step_parent_backing(void *ctx)
{
	return ((struct rm *)ctx)->s_backing;
}

/* The merge is done: the unused room back, the noted chain dropped. */
static void step_settle_room(void *ctx)
{
	struct rm *r = ctx;

	rm_trim(r);
	rm_ids_free(r->ids);
	r->ids = NULL;
	dir_reserve_free(&r->res);
}

/* Commit: S renamed over C (atomic). */
static int step_replace_child(void *ctx)
{
	struct rm *r = ctx;
	struct dir_store_priv *p = r->st->priv;
	int rc;

	if ((rc = crash_fail("dir-rmdir-rename")) || (rc = dir_rename(p->rootfd, r->s, r->c, false)))
		return rc;
	crash_point("dir-rmdir-commit-renamed");
	return 0;
}

/* Rebase: S unlinked, durably. */
static int step_remove_s(void *ctx)
{
	struct rm *r = ctx;
	struct dir_store_priv *p = r->st->priv;
	int rc;

	if ((rc = crash_fail("dir-rmdir-unlink")) || ((rc = dir_unlink(p->rootfd, r->s)) && rc != -ENOENT))
		return rc;
	if ((rc = dir_fsync_parent(p->rootfd, r->s)))
		return rc;
	crash_point("dir-rmdir-rebase-removed");
	return 0;
}

/* The end of the image in file rel: past its last cluster with a refcount. */
static int rebase_undo(struct store *s, struct rm *r, const struct dir_op_paths *n)
{
	struct dir_store_priv *p = s->priv;
	uint64_t orig = r->res.orig_size, end;
	char *now = NULL, *raw = NULL;
	struct qcow2_check_result cr;
	enum chain_layer_format fmt;
	struct layer_io *io;
	uint64_t vs;
	bool undone;
	int rc;

	rm_release(r);
	rc = dir_probe_backing(s, r->c, &now, &raw, &fmt, &vs);
	undone = rc == 0 && now && !strcmp(now, r->s);
	free(now);
	free(raw);
	if (!undone)
		return -1;
	if (file_io_open(p->rootfd, s->name, r->c, true, &io) == 0) {
		if (qcow2_reclaim(io, 0, &cr) == 0)
			layer_flush(io);
		layer_close(io);
	}
	if (dir_image_end(s, r->c, &end) == 0 && file_io_open(p->rootfd, s->name, r->c, true, &io) == 0) {
		if (io->size > (end > orig ? end : orig))
			(void)!ftruncate(file_io_fd(io), (off_t)(end > orig ? end : orig));
		layer_close(io);
	}
	vlog(LOG_NOTICE, "%s: undone (every view reads as before)", r->label);
	return dir_intent_clear(s, n);
}

/* Does any image file of the store other than `child` have `rel` as its backing? */
static bool other_children(struct store *s, const char *rel, const char *child)
{
	struct dir_store_priv *p = s->priv;
	struct dir_scan sc;
	bool hit = false;

	if (dir_layout_scan(s, &sc))
		return true;
	for (int d = 0; d < sc.ndirs && !hit; d++) {
		int fd = dir_opendir_fd(p->rootfd, sc.dirs[d]);
		DIR *dh = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;

		if (!dh) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		while (!hit && (de = readdir(dh))) {
			char f[PATH_MAX], *b = NULL;
			enum chain_layer_format fmt;
			uint64_t vs;

			if (de->d_name[0] == '.' || (de->d_type != DT_REG && de->d_type != DT_UNKNOWN))
				continue;
			snprintf(f, sizeof(f), "%s%s%s", sc.dirs[d], sc.dirs[d][0] ? "/" : "", de->d_name);
			if (!strcmp(f, child) || !strcmp(f, rel))
				continue;
			if (dir_probe_backing(s, f, &b, NULL, &fmt, &vs) == 0 && b && !strcmp(b, rel)) {
				vlog(LOG_ERR, "%s/%s: %s also reads through it: refusing to remove it",
				     s->name, rel, f);
				hit = true;
			}
			free(b);
		}
		closedir(dh);
	}
	dir_scan_release(&sc);
	return hit;
}

/*
 * Before the point of no return. A merge refused before it wrote anything
 * gives back its room and its intent; a rebase whose C still reads through
 * S is undone (rebase_undo). A commit that began writing S is past it.
 */
static int step_undo(void *ctx, bool commit, int err)
{
	struct rm *r = ctx;

	(void)err;
	if (!r->m.begun) {
		dir_reserve_undo(&r->res);
		dir_intent_clear(r->st, r->n);
		return 0;
	}
	if (!commit && rebase_undo(r->st, r, r->n) == 0)
		return 0;
	return 1;
}

/* Past the point of no return: what recovery would do, from the intent's record. */
static int step_finish(void *ctx, bool commit, int err)
{
	struct rm *r = ctx;
	int rc;

	(void)commit;
	(void)err;
	rm_release(r);
	rc = dir_recover_chain(r->st, r->n, r->in);
	if (rc)
		vlog(LOG_ERR, "%s: cannot be finished now: the next operation on the volume or the "
		     "next mount finishes it", r->label);
	return rc;
}

/* The chain changed while the lock was released, or the lock cannot be had back. */
static void step_stopped(void *ctx, int err)
{
	struct rm *r = ctx;

	vlog(LOG_ERR, "%s: stopped (%s); intent %s kept", r->label, strerror(-err), r->n->intent);
}

static int step_open_views(void *ctx)
{
	struct rm *r = ctx;

	return rm_open_views(r->st, r);
}

/* Reserve the room `commit` or rebase needs (rm_prepare). */
static int step_room(void *ctx, bool commit)
{
	struct rm *r = ctx;

	return rm_prepare(r->st, r, commit);
}

/* The intent file: what recovery needs to finish or undo the merge chosen. */
static int step_record_intent(void *ctx, bool commit)
{
	struct rm *r = ctx;
	struct intent *in = r->in;
	int rc;

	in->kind = commit ? INTENT_RMDIR_COMMIT : INTENT_RMDIR_REBASE;
	if (snprintf(in->s, sizeof(in->s), "%s", r->s) >= (int)sizeof(in->s) ||
	    snprintf(in->c, sizeof(in->c), "%s", r->c) >= (int)sizeof(in->c) ||
	    snprintf(in->backing, sizeof(in->backing), "%s", commit || !r->s_backing ? "" : r->s_backing) >=
		    (int)sizeof(in->backing))
		rc = -ENAMETOOLONG;
	else
		rc = dir_intent_write(r->st, r->n, in);
	if (rc) {
		dir_reserve_undo(&r->res);
		return rc;
	}
	crash_point(commit ? "dir-rmdir-commit-intent" : "dir-rmdir-rebase-intent");
	VSTORFS_CHECK(dir_intent_holds(r->st, r->n, in));  /* dir_op.c (1) */
	return 0;
}

/* The snapshot's time goes with it, then the intent. */
static void step_forget(void *ctx)
{
	struct rm *r = ctx;

	dir_snaptime_set(r->st, r->n, r->in->snap, 0);
	dir_intent_clear(r->st, r->n);
}

static const struct snap_merge_steps dir_merge_steps = {
	.fail_merge = "dir-rmdir-merge",
	.fail_relink = "dir-rmdir-relink",
	.merged = "dir-rmdir-commit-merged",
	.copied = "dir-rmdir-rebase-copied",
	.relinked = "dir-rmdir-rebase-relinked",
	.relink_in_data_phase = false,
	.data_begin = step_data_begin,
	.data_end = step_data_end,
	.parent_backing = step_parent_backing,
	.settle_room = step_settle_room,
	.replace_child = step_replace_child,
	.remove_s = step_remove_s,
	.undo = step_undo,
	.finish = step_finish,
	.stopped = step_stopped,
	.open_views = step_open_views,
	.room = step_room,
	.record_intent = step_record_intent,
	.forget = step_forget,
};

int dir_chain_remove(struct dir_op *op, const struct store_volume *vol, int vi,
			const struct store_progress *prog)
{
	struct store *s = op->s;
	const char *snap = vol->views[vi].name;
	struct dir_op_paths n;
	struct rm r;
	struct intent in = { 0 };
	char *dir, *prel = NULL;
	enum chain_layer_format fmt;
	uint64_t vs;
	int rc;

	memset(&r, 0, sizeof(r));
	r.st = s;
	r.n = &n;
	r.in = &in;
	r.m.label = r.label;
	snprintf(r.s, sizeof(r.s), "%s", vinfo(&vol->views[vi])->rel);
	/* The child: the next newer chain view's layer, or the volume's own file. */
	snprintf(r.c, sizeof(r.c), "%s", vinfo(&vol->views[0])->rel);
	for (int i = vi + 1; i < vol->nviews; i++)
		if (!vinfo(&vol->views[i])->is_isnap) {
			snprintf(r.c, sizeof(r.c), "%s", vinfo(&vol->views[i])->rel);
			break;
		}
	dir = dir_part(r.s);
	if (!dir)
		return -ENOMEM;
	rc = dir_op_paths(&n, dir, vol->name);
	free(dir);
	if (rc)
		return rc;
	if (dir_exists(op->p->rootfd, n.intent)) {
		vlog(LOG_ERR, "%s/%s: an unfinished snapshot operation is in the way: remount to recover it",
		     s->name, n.vol);
		return -EBUSY;
	}
	if (other_children(s, r.s, r.c))
		return -EBUSY;
	if ((rc = dir_probe_backing(s, r.s, &prel, &r.s_backing, &fmt, &vs)))
		return rc;
	if (r.s_backing && !prel) {
		vlog(LOG_ERR, "%s/%s: backing file %s is outside the store: refusing to merge", s->name,
		     r.s, r.s_backing);
		free(r.s_backing);
		return -EIO;
	}
	if (prel)
		snprintf(r.p, sizeof(r.p), "%s", prel);
	free(prel);
	if (snprintf(in.snap, sizeof(in.snap), "%s", snap) >= (int)sizeof(in.snap)) {
		free(r.s_backing);
		return -ENAMETOOLONG;
	}
	snprintf(r.label, sizeof(r.label), "%s/%s: deleting snapshot %s", s->name, n.vol, snap);
	rc = snap_merge_remove(&dir_merge_steps, &r, &r.m, prog);
	rm_release(&r);
	free(r.s_backing);
	return rc;
}

/* ---- recovery of one intent file ---- */

int dir_recover_chain(struct store *s, const struct dir_op_paths *n, const struct intent *in)
{
	struct dir_store_priv *p = s->priv;
	const char *snap = in->snap, *a = in->s, *b = in->c, *c = in->backing[0] ? in->backing : "-";
	int64_t t = in->time;
	int rc;

	if (in->kind == INTENT_MKDIR_CHAIN) {
		char srel[PATH_MAX];
		bool have_v, have_s, have_t;

		if (dir_op_snap_path(n, snap, srel, sizeof(srel)))
			return -EINVAL;
		have_v = dir_exists(p->rootfd, n->vol);
		have_s = dir_exists(p->rootfd, srel);
		have_t = dir_exists(p->rootfd, n->scratch);
		if (have_v && !have_s) {
			vlog(LOG_NOTICE, "%s/%s: undoing interrupted snapshot %s (nothing else was changed)",
			     s->name, n->vol, snap);
			if (have_t && (rc = dir_unlink(p->rootfd, n->scratch)))
				return rc;
			dir_snaptime_set(s, n, snap, 0);   /* written before the renames */
		} else if (!have_v && have_s && have_t) {
			vlog(LOG_NOTICE, "%s/%s: finishing interrupted snapshot %s (renaming the new overlay)",
			     s->name, n->vol, snap);
			if ((rc = rename_noreplace(p->rootfd, n->scratch, n->vol)))
				return rc;
			if ((rc = dir_snaptime_set(s, n, snap, t)))
				return rc;
		} else if (have_v && have_s && !have_t) {
			vlog(LOG_NOTICE, "%s/%s: finishing interrupted snapshot %s", s->name, n->vol, snap);
			if ((rc = dir_snaptime_set(s, n, snap, t)))
				return rc;
		} else {
			vlog(LOG_ERR, "%s/%s: interrupted snapshot %s: volume %s, snapshot %s, overlay %s: "
			     "leaving it for an administrator", s->name, n->vol, snap,
			     have_v ? "present" : "missing", have_s ? "present" : "missing",
			     have_t ? "present" : "missing");
			return -EIO;
		}
		dir_fsync_parent(p->rootfd, n->vol);
		return dir_intent_clear(s, n);
	}
	if (in->kind == INTENT_RMDIR_COMMIT || in->kind == INTENT_RMDIR_REBASE) {
		bool commit = in->kind == INTENT_RMDIR_COMMIT;
		struct snap_recover_facts f = { 0 };
		struct rm r;

		memset(&r, 0, sizeof(r));
		r.st = s;
		r.m.label = r.label;
		snprintf(r.label, sizeof(r.label), "%s/%s: finishing interrupted deletion of snapshot %.64s",
			 s->name, n->vol, snap);
		/* dir renames S over C in one step, so its steps never leave C gone; a C gone
		 * otherwise fails the merge again below, as it always did (c_exists). */
		f.commit = commit;
		f.c_exists = true;
		f.last_step_done = !dir_exists(p->rootfd, a);
		rc = 0;
		if (!f.last_step_done) {
			snprintf(r.s, sizeof(r.s), "%s", a);
			snprintf(r.c, sizeof(r.c), "%s", b);
			if (!commit && strcmp(c, "-")) {
				char *prel = NULL;

				r.s_backing = strdup(c);
				if (!r.s_backing || dir_backing_resolve(&p->backing, r.s, c, &prel)) {
					free(r.s_backing);
					return -EIO;
				}
				snprintf(r.p, sizeof(r.p), "%s", prel);
				free(prel);
			}
			if (!commit) {
				char *now = NULL, *raw = NULL;
				enum chain_layer_format fmt;
				uint64_t vs;

				rc = dir_probe_backing(s, r.c, &now, &raw, &fmt, &vs);
				f.c_relinked = rc == 0 && (r.p[0] ? now && !strcmp(now, r.p) : !raw);
				free(now);
				free(raw);
			}
		}
		switch (snap_recover_rmdir(&f)) {
		case SNAP_RECOVER_BOOKKEEPING:
			vlog(LOG_NOTICE, "%s (only the bookkeeping was left)", r.label);
			break;
		case SNAP_RECOVER_REMOVE_S:
			vlog(LOG_NOTICE, "%s (child already relinked: removing %s)", r.label, r.s);
			rc = dir_unlink(p->rootfd, r.s);
			if (rc == 0 || rc == -ENOENT)
				rc = dir_fsync_parent(p->rootfd, r.s);
			free(r.s_backing);
			if (rc)
				return rc;
			break;
		case SNAP_RECOVER_RENAME:
		case SNAP_RECOVER_REFUSE:
		case SNAP_RECOVER_MERGE_AGAIN:
			vlog(LOG_NOTICE, "%s (%s again)", r.label, commit ? "commit" : "rebase");
			if (!rc)
				rc = rm_reclaim(s, &r, commit);
			if (!rc)
				rc = rm_open_views(s, &r);
			if (!rc)
				rc = rm_prepare(s, &r, commit);
			if (!rc)
				rc = snap_merge_run(&dir_merge_steps, &r, &r.m, commit);
			rm_release(&r);
			free(r.s_backing);
			if (rc)
				return rc;
			break;
		}
		dir_snaptime_set(s, n, snap, 0);
		return dir_intent_clear(s, n);
	}
	return 1; /* not a chain intent */
}

