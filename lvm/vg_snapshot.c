/*
 * vg_snapshot: taking and deleting snapshots the way Proxmox VE 9 does on
 * thick LVM (mkdir/rmdir of snapshot views), and the steps recovery reuses
 * (vg_snapshot_internal.h).
 *
 * Invariants, for every operation:
 * (1) The storage lock (Proxmox's own when a storage names the VG) is held
 *     from the first check to the last change: two operations on one VG
 *     never interleave, with each other or with Proxmox. On a shared VG
 *     the cluster lock (store/pve_store.c) is released only for the merge's
 *     data copy (into an LV of a VM this node holds qemu-server's lock
 *     for), and the layers are re-checked when it is taken back.
 * (2) Before the first change, the intent is an LV tag on the layer being
 *     changed ("vstorfs-mkdir=<snap>", "vstorfs-rmdir=..."). Tags live in
 *     the VG metadata, so the intent travels with the VG to any host.
 * (3) Each step is one atomic lvm2 metadata commit or an image write whose
 *     data is flushed before any metadata points at it; after every step
 *     every surviving view reads the same bytes.
 * (4) The intent tag is removed by the last step, so a tagged LV means
 *     "unfinished", and snapshot_recover() can tell from the names and
 *     tags alone how far the operation got.
 *
 * mkdir <volume>/<snap>: the new overlay is built under a scratch name and
 * only then swapped in, so the live volume V is never rewritten and at no
 * point does a name Proxmox knows hold a half-written image.
 *   A  T = vstorfs-new-<V> created, tagged mkdir=<snap>  (lvcreate)
 *   B  T holds the overlay backed by S, flushed           (write+flush)
 *   C  V renamed to S = snap_<V>_<snap>.qcow2             (lvrename)
 *   D  T renamed to V, still tagged                       (lvrename)
 *   E  V untagged: done                                   (lvchange)
 * Recovery: T exists and S does not (A, B): remove T. T and S exist, V does
 * not (C): rename T to V, untag. V tagged (D): untag. A VM that started on V
 * between a crash and recovery loses nothing: nothing named V is written.
 * A's lvcreate carries the intent tag itself (--addtag): no lvchange tags
 * it. E stays a command of its own: lvrename takes no tag options (lvm2
 * 2.03.16), and by (4) the tag may go only with or after the last step.
 *
 * rmdir <volume>/<snap> merges S with its child C (P: S's parent, if any):
 *   commit  S tagged rmdir=commit:<C> (+ C's view identity parked on S)
 *           -- point of no return: the first write into S (view S changes) --
 *           C's data written into S, flushed; C removed; S renamed to C;
 *           S's tags swapped for C's identity (the intent goes last)
 *   rebase  P given S's identity tag if it had none; S tagged
 *           rmdir=rebase:<C>:<P or ->; S's data copied into C, flushed
 *           -- point of no return: the relink of C (backing string to P) --
 *           S removed (its tag with it)
 * Recovery (vg_recover.c): commit again while C exists, else rename/untag;
 * rebase again unless C already points past S, else remove S.
 * The driver (store/snap_merge.c, its invariants (4)-(7)) runs these steps
 * in this order with the platform steps in vg_merge_steps; the recovery
 * rules are written once in store/snap_recover.h. LVM's point of no return
 * for a commit is snap_merge.past (set after the merge's fail point).
 *
 * An operation that fails has not happened (as in dir/dir_snapshot.c).
 * Room is checked before the tag (rm_fits), so what fails after it is the
 * disk (EIO, or ENOSPC from below). Before the point of no return the rmdir
 * is undone at once (snap_merge_remove, rm_undo): a rebase's copies into C stay (C
 * read those bytes through S anyway) and what a failed batch leaked in the
 * target is reclaimed; S drops the intent and the parked view tag in one
 * lvm2 commit, then P the identity tag the rebase gave it; every view reads
 * as before, the error is returned, and no later mount deletes the snapshot
 * the user was told still exists. No scratch LV is involved in rmdir. Past
 * the point of no return the operation is finished at once, as recovery
 * would (vg_recover_rmdir_tag), and rmdir reports success only if that
 * worked; otherwise the tag stays and the next mount finishes it. Neither
 * is tried when the cluster lock could not be taken back after a merge
 * outside it, or the layers changed meanwhile (struct snap_merge.stop): then
 * no metadata may change and the tag is left to recovery.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain.h"
#include "chain/merge.h"
#include "chain/qcow2_create.h"
#include "chain/qcow2_snapshot.h"
#include "chain/qcow2_writer.h"
#include "common/crash.h"
#include "common/log.h"
#include "lvm/dm_busy.h"
#include "lvm/lvm.h"
#include "lvm/lvm_change.h"
#include "lvm/pve_storage.h"
#include "lvm/vg_snapshot_internal.h"
#include "lvm/vg_store.h"
#include "store/pve_cluster.h"
#include "store/snap_merge.h"

int vg_intent_tag(const struct intent *in, char *buf, size_t len)
{
	const char *prefix = in->kind == INTENT_MKDIR_CHAIN ? TAG_MKDIR : TAG_RMDIR;
	size_t pl = strlen(prefix);
	int rc;

	if (len <= pl)
		return -ENAMETOOLONG;
	memcpy(buf, prefix, pl);
	rc = intent_tag_encode(in, buf + pl, len - pl);
	return rc < 0 ? rc : 0;
}

int vg_op_rescan(struct op *op)
{
	int rc;

	if (op->cat)
		pve_catalog_free(op->cat);
	op->cat = NULL;
	if (op->vg)
		lvm_vg_put(op->vg);
	op->vg = NULL;
	rc = lvm_vg_scan(&op->lo, op->vgname, &op->vg);
	if (rc == 0)
		rc = pve_catalog_build(op->vg, &op->cat);
	return rc;
}

/* Lock the VG and refuse what is not ours to change. */
int vg_op_begin(struct op *op, struct store *s, bool writing)
{
	const struct store_config *o = s->cfg;
	const char *vg = s->name;
	struct pve_storage st;
	int rc;

	memset(op, 0, sizeof(*op));
	op->o = o;
	vg_store_lvm_opts(s, &op->lo);
	op->vgname = vg;
	op->lockfd = -1;
	rc = pve_storage_find(o->pve_storage_cfg ? o->pve_storage_cfg : PVE_STORAGE_CFG, vg, &st);
	if (rc < 0)
		return rc;
	/* A shared storage: only under the cluster lock (store/pve_store.c) or when told to. */
	if (writing && st.shared && !o->shared_snapshots && !pve_cfs_lock_held()) {
		vlog(LOG_ERR, "%s: storage %s is shared: snapshots there are Proxmox's to take "
		     "(mount with -o shared_snapshots to override)", vg, st.storeid);
		return -EBUSY;
	}
	op->lockfd = pve_storage_lock(vg, &st, LOCK_TIMEOUT_S);
	if (op->lockfd < 0)
		return op->lockfd;
	rc = vg_op_rescan(op);
	if (rc == 0 && writing && op->vg->lock_type && op->vg->lock_type[0] && !o->shared_snapshots) {
		vlog(LOG_ERR, "%s: VG is under lvmlockd (%s): refusing snapshot changes "
		     "(mount with -o shared_snapshots to override)", vg, op->vg->lock_type);
		rc = -EBUSY;
	}
	return rc;
}

void vg_op_end(struct op *op)
{
	if (op->cat)
		pve_catalog_free(op->cat);
	if (op->vg)
		lvm_vg_put(op->vg);
	pve_storage_unlock(op->lockfd);
}

const struct lvm_lv *vg_find_lv(const struct op *op, const char *name)
{
	return lvm_vg_find_lv(op->vg, name);
}

static int busy_check(const struct op *op, const struct pve_volume *v)
{
	int rc = dm_lv_open_count_busy(op->vgname, v->lv->name);

	for (int i = 0; rc == 0 && i < v->nsnaps; i++)
		rc = dm_lv_open_count_busy(op->vgname, v->snaps[i].lv->name);
	if (rc > 0) {
		vlog(LOG_ERR, "%s/%s: an LV of the chain is open (a running VM?): refusing",
		     op->vgname, v->lv->name);
		return -EBUSY;
	}
	return rc;
}

/* The header of one layer; release with chain_probe_release. */
static int probe_lv(struct op *op, const struct lvm_lv *lv, struct chain_probe *p)
{
	struct layer_io *io;
	int rc = lvm_lv_open(op->vg, lv, &io);

	if (rc < 0)
		return rc;
	rc = chain_probe_layer(io, p);
	layer_close(io);
	return rc;
}

static int probe_vsize(struct op *op, const struct lvm_lv *lv, uint64_t *vsize)
{
	struct chain_probe p;
	int rc = probe_lv(op, lv, &p);

	if (rc < 0)
		return rc;
	if (p.format != CHAIN_FMT_QCOW2) {
		vlog(LOG_ERR, "%s/%s: not a readable qcow2 image: %s", op->vgname, lv->name,
		     p.format == CHAIN_FMT_BAD ? p.error : "raw");
		rc = -EIO;
	}
	*vsize = p.virtual_size;
	chain_probe_release(&p);
	return rc;
}

/* Write the Proxmox overlay for `snap_lv` into LV `name` and flush it. */
static int format_overlay(struct op *op, const char *name, const char *snap_lv, uint64_t vsize)
{
	const struct lvm_lv *lv = vg_find_lv(op, name);
	struct layer_io *io;
	int rc;

	if (!lv)
		return -ENOENT;
	rc = lvm_lv_open_rw(op->vg, lv, &io);
	if (rc < 0)
		return rc;
	rc = qcow2_overlay_create(io, vsize, snap_lv, "qcow2");
	layer_close(io);
	if (rc < 0)
		vlog(LOG_ERR, "%s/%s: writing the overlay failed: %s", op->vgname, name, strerror(-rc));
	return rc;
}

/* The scratch LV an interrupted or running mkdir of `volume` builds in. */
static int scratch_name(const char *volume, char *out, size_t len)
{
	int n = snprintf(out, len, SCRATCH_PREFIX "%s", volume);

	return n < 0 || (size_t)n >= len || n > LVM_LV_NAME_MAX ? -ENAMETOOLONG : 0;
}

/*
 * Rename an LV and make sure of the outcome: when lvm2 reports a failure
 * (the lvm shell or a forked lvm2 died), its commit may still have landed,
 * so the VG is rescanned and the rename counts as done if `to` exists and
 * `from` does not. *unknown is set when not even the rescan worked: then
 * neither outcome may be assumed and only recovery may act.
 */
static int rename_verified(struct op *op, const char *from, const char *to, bool *unknown)
{
	int rc = lvm_lv_rename(&op->lo, op->vgname, from, to);
	int scan;

	*unknown = false;
	if (rc == 0)
		return 0;
	scan = vg_op_rescan(op);
	if (scan < 0) {
		*unknown = true;
		return rc;
	}
	if (vg_find_lv(op, to) && !vg_find_lv(op, from)) {
		vlog(LOG_WARNING, "%s: renaming %s to %s was reported failed but committed: going on",
		     op->vgname, from, to);
		return 0;
	}
	return rc;
}

static int take_locked(struct op *op, const char *volume, const char *snap)
{
	const struct pve_volume *v = pve_catalog_find(op->cat, volume);
	char snap_lv[256], scratch[256], tag_mkdir[128], tag_vm[64], tag_vol[300];
	const char *tags[4] = { tag_vm, tag_vol, tag_mkdir, NULL };
	struct intent in;
	uint64_t vsize;
	bool unknown;
	int rc;

	if (!v)
		return -ENOENT;
	if (v->format != PVE_FMT_QCOW2)
		return -EOPNOTSUPP;
	if (pve_snapshot_lv_name(volume, snap, snap_lv, sizeof(snap_lv)) < 0)
		return -EINVAL;
	if (vg_find_lv(op, snap_lv))
		return -EEXIST;
	if ((rc = scratch_name(volume, scratch, sizeof(scratch))) < 0)
		return rc;
	if (vg_find_lv(op, scratch)) {
		vlog(LOG_ERR, "%s/%s: an unfinished snapshot of %s is in the way: remount to recover it",
		     op->vgname, scratch, volume);
		return -EBUSY;
	}
	if ((rc = busy_check(op, v)) < 0 || (rc = probe_vsize(op, v->lv, &vsize)) < 0)
		return rc;
	in = (struct intent){ .kind = INTENT_MKDIR_CHAIN };
	snprintf(in.snap, sizeof(in.snap), "%s", snap);
	if ((rc = vg_intent_tag(&in, tag_mkdir, sizeof(tag_mkdir))) < 0)
		return rc;
	snprintf(tag_vm, sizeof(tag_vm), "pve-vm-%d", v->vmid);
	snprintf(tag_vol, sizeof(tag_vol), "pve-%s", volume);

	if ((rc = lvm_lv_create(&op->lo, op->vgname, scratch, qcow2_overlay_size(vsize), tags)) < 0)
		return rc;
	crash_point("mkdir-created");
	if ((rc = vg_op_rescan(op)) < 0 || (rc = format_overlay(op, scratch, snap_lv, vsize)) < 0)
		goto undo_create;
	crash_point("mkdir-written");
	if ((rc = rename_verified(op, volume, snap_lv, &unknown)) < 0 && unknown)
		goto left;
	if (rc < 0)
		goto undo_create;
	crash_point("mkdir-renamed");
	if ((rc = rename_verified(op, scratch, volume, &unknown)) < 0 && unknown)
		goto left;
	if (rc < 0)
		goto undo_rename;
	crash_point("mkdir-swapped");
	/* The snapshot is complete: a failure to untag leaves only the tag, for recovery. */
	if (lvm_lv_retag(&op->lo, op->vgname, volume, NULL, tag_mkdir) < 0)
		vlog(LOG_WARNING, "%s/%s: tag %s left behind; the next mount removes it", op->vgname,
		     volume, tag_mkdir);
	vlog(LOG_NOTICE, "%s/%s: took snapshot %s (layer %s)", op->vgname, volume, snap, snap_lv);
	return 0;

undo_rename:
	/* T must stay unless V is back: with S and T and no V, recovery finishes the snapshot. */
	if (rename_verified(op, snap_lv, volume, &unknown) < 0)
		goto left;
undo_create:
	lvm_lv_remove(&op->lo, op->vgname, scratch);
	return rc;
left:
	vlog(LOG_ERR, "%s/%s: snapshot %s left unfinished; the next mount recovers it",
	     op->vgname, volume, snap);
	return rc;
}

int vg_snapshot_take(struct store *s, const char *volume, const char *snap,
		     const struct store_progress *p)
{
	struct op op;
	int rc;

	(void)p; /* a few lvm2 commands and one small write: nothing to report */
	rc = vg_op_begin(&op, s, true);
	if (rc == 0)
		rc = take_locked(&op, volume, snap);
	vg_op_end(&op);
	return rc;
}

/* ---- rmdir ---- */

int vg_probe_backing(struct op *op, const struct lvm_lv *lv, char **backing)
{
	struct chain_probe p;
	int rc = probe_lv(op, lv, &p);

	*backing = NULL;
	if (rc < 0)
		return rc;
	if (p.format == CHAIN_FMT_QCOW2) {
		*backing = p.backing;
		p.backing = NULL;
	}
	chain_probe_release(&p);
	return 0;
}

/* The layer of the volume whose backing string names `name` (the child). */
static const struct lvm_lv *child_of(struct op *op, const struct pve_volume *v, const char *name)
{
	const struct lvm_lv *found = NULL;

	for (int i = -1; i < v->nsnaps && !found; i++) {
		const struct lvm_lv *lv = i < 0 ? v->lv : v->snaps[i].lv;
		char *b;

		if (vg_probe_backing(op, lv, &b) == 0) {
			const char *bn = lvm_backing_lv_name(op->vgname, b);

			if (bn && !strcmp(bn, name))
				found = lv;
		}
		free(b);
	}
	return found;
}

/* Does any LV other than `child` read through `name` (a linked clone, say)? */
static bool other_children(struct op *op, const char *name, const struct lvm_lv *child)
{
	for (int i = 0; i < op->vg->nlvs; i++) {
		const struct lvm_lv *lv = &op->vg->lvs[i];
		const char *bn;
		char *b;
		bool hit;

		if (lv == child || !strcmp(lv->name, name) || vg_probe_backing(op, lv, &b))
			continue;
		bn = lvm_backing_lv_name(op->vgname, b);
		hit = bn && !strcmp(bn, name);
		free(b);
		if (hit) {
			vlog(LOG_ERR, "%s/%s: %s also reads through it: refusing to remove it", op->vgname,
			     name, lv->name);
			return true;
		}
	}
	return false;
}

static int open_view(struct op *op, const struct lvm_lv *lv, struct chain **out)
{
	struct layer_io *io;
	struct chain_store st;
	char label[600];
	int rc = lvm_lv_open(op->vg, lv, &io);

	if (rc < 0)
		return rc;
	snprintf(label, sizeof(label), "%s/%s", op->vgname, lv->name);
	lvm_store_init(&st, op->vg);
	rc = chain_open(io, CHAIN_FMT_QCOW2, &st, label, out);
	lvm_store_release(&st);
	if (rc == 0 && chain_is_broken(*out)) {
		vlog(LOG_ERR, "%s: the chain below is broken: refusing to merge", label);
		chain_put(*out);
		rc = -EIO;
	}
	return rc;
}


void vg_rm_release(struct rm *r)
{
	snap_merge_release(&r->m);
}

int vg_rm_open_views(struct op *op, struct rm *r)
{
	int rc = open_view(op, r->s, &r->m.view_s);

	if (!rc)
		rc = open_view(op, r->c, &r->m.view_c);
	if (!rc && r->p)
		rc = open_view(op, r->p, &r->m.view_p);
	return rc;
}

int vg_rm_open_writer(struct op *op, struct rm *r, bool commit)
{
	struct layer_io *io;
	int rc = lvm_lv_open_rw(op->vg, commit ? r->s : r->c, &io);

	if (rc)
		return rc;
	return snap_merge_open_writer(&r->m, io, commit);
}

/* Does the chosen direction fit into its LV? */
static int rm_fits(struct op *op, struct rm *r, bool commit)
{
	uint64_t need;
	int rc = vg_rm_open_writer(op, r, commit);

	if (!rc)
		rc = commit ? merge_commit_need(r->m.view_c, r->m.w, &need)
			    : merge_rebase_need(r->m.view_c, r->m.view_s, r->m.view_p, r->m.w, &need);
	if (!rc && need > qcow2_writer_room(r->m.w)) {
		vlog(LOG_WARNING, "%s: %s would need %llu more bytes than the LV has", r->label,
		     commit ? "commit" : "rebase", (unsigned long long)need);
		rc = -ENOSPC;
	}
	if (!rc && need > qcow2_writer_table_room(r->m.w)) {
		vlog(LOG_WARNING, "%s: %s would need %llu more bytes than the image's refcount table "
		     "reaches (it is not grown)", r->label, commit ? "commit" : "rebase",
		     (unsigned long long)need);
		rc = -ENOSPC;
	}
	if (rc)
		snap_merge_close_writer(&r->m);
	return rc;
}

/*
 * The merge writes only into an LV of the VM being changed (under its
 * qemu-server lock), never the VG metadata, so on a shared storage it runs
 * outside Proxmox's cluster lock (pmxcfs expires that lock at 120 s and
 * Proxmox's own waiters give up at 10 s). Before the next metadata step the
 * lock is taken again and the layers are checked to be the ones measured.
 */
static void rm_ids_fill(const struct rm *r, struct rm_ids *id)
{
	memset(id, 0, sizeof(*id));
	snprintf(id->s, sizeof(id->s), "%s", r->s->name);
	snprintf(id->su, sizeof(id->su), "%s", r->s->uuid ? r->s->uuid : "");
	snprintf(id->c, sizeof(id->c), "%s", r->c->name);
	snprintf(id->cu, sizeof(id->cu), "%s", r->c->uuid ? r->c->uuid : "");
	if (r->p) {
		snprintf(id->p, sizeof(id->p), "%s", r->p->name);
		snprintf(id->pu, sizeof(id->pu), "%s", r->p->uuid ? r->p->uuid : "");
	}
}

static bool rm_data_begin(const struct rm *r, struct rm_ids *id)
{
	rm_ids_fill(r, id);
	return pve_cfs_suspend("merging") > 0;
}

static bool same_lv(const struct lvm_lv *lv, const char *uuid)
{
	return lv && !strcmp(lv->uuid ? lv->uuid : "", uuid);
}

/* Take the cluster lock back and re-find S, C, P in a fresh scan, unchanged. */
static int rm_data_end(struct op *op, struct rm *r, const struct rm_ids *id, bool suspended, int rc)
{
	const struct lvm_lv *s, *c, *p;
	int lrc;

	if (!suspended)
		return rc;
	lrc = pve_cfs_resume();
	if (lrc) {
		/* Without the cluster lock no metadata may change: not even an undo. */
		r->m.stop = true;
		return rc ? rc : lrc;
	}
	if (rc)
		return rc;
	if ((lrc = vg_op_rescan(op))) {
		r->m.stop = true;
		return lrc;
	}
	s = vg_find_lv(op, id->s);
	c = vg_find_lv(op, id->c);
	p = id->p[0] ? vg_find_lv(op, id->p) : NULL;
	if (!same_lv(s, id->su) || !same_lv(c, id->cu) || (id->p[0] && !same_lv(p, id->pu))) {
		vlog(LOG_ERR, "%s: the layers changed while merging outside the cluster lock: "
		     "the rest is left to recovery", r->label);
		r->m.stop = true;
		return -EIO;
	}
	r->s = s;
	r->c = c;
	r->p = p;
	return 0;
}

/* ---- lvm/'s platform steps for the merge driver (store/snap_merge.h (6)) ---- */

static int step_data_begin(void *ctx)
{
	struct rm *r = ctx;

	r->suspended = rm_data_begin(r, &r->data);
	return 0;
}

static int step_data_end(void *ctx, bool commit, int rc)
{
	struct rm *r = ctx;

	(void)commit;
	return rm_data_end(r->op, r, &r->data, r->suspended, rc);
}

static const char *step_parent_backing(void *ctx)
{
	struct rm *r = ctx;

	return r->p ? r->p->name : NULL;
}

/* Commit: C removed, S renamed to C, S's tags swapped for C's identity (the intent last). */
static int step_replace_child(void *ctx)
{
	struct rm *r = ctx;
	struct op *op = r->op;
	char cname[256];
	int rc;

	snprintf(cname, sizeof(cname), "%s", r->c->name);
	if ((rc = crash_fail("lvm-rmdir-remove")) || (rc = lvm_lv_remove(&op->lo, op->vgname, cname)))
		return rc;
	crash_point("rmdir-commit-removed");
	if ((rc = crash_fail("lvm-rmdir-rename")) || (rc = lvm_lv_rename(&op->lo, op->vgname, r->s->name, cname)))
		return rc;
	crash_point("rmdir-commit-renamed");
	return vg_commit_finish_tags(op, r->s, cname, r->tag);
}

/* Rebase: S removed; the tag goes with the LV, so this is the last step. */
static int step_remove_s(void *ctx)
{
	struct rm *r = ctx;
	char sname[256];
	int rc;

	snprintf(sname, sizeof(sname), "%s", r->s->name);
	if ((rc = crash_fail("lvm-rmdir-remove")))
		return rc;
	return lvm_lv_remove(&r->op->lo, r->op->vgname, sname);
}

#define TAG_VIEW_NEXT "vstorfs-viewc="

/*
 * After a commit S takes C's name and stands for view C: it drops the
 * intent and S's own identity and takes the identity C carried (which the
 * intent step parked on S as TAG_VIEW_NEXT). One lvm2 commit.
 */
int vg_commit_finish_tags(struct op *op, const struct lvm_lv *s_lv, const char *name, const char *intent)
{
	const char *del[4] = { intent, NULL, NULL, NULL }, *add[2] = { NULL, NULL };
	const char *next = lvm_lv_tag_value(s_lv, TAG_VIEW_NEXT);
	char view[300];
	int nd = 1;

	for (int i = 0; s_lv->tags && s_lv->tags[i] && nd < 3; i++)
		if (!strncmp(s_lv->tags[i], TAG_VIEW, strlen(TAG_VIEW)) ||
		    !strncmp(s_lv->tags[i], TAG_VIEW_NEXT, strlen(TAG_VIEW_NEXT)))
			del[nd++] = s_lv->tags[i];
	if (next) {
		snprintf(view, sizeof(view), TAG_VIEW "%s", next);
		add[0] = view;
	}
	return lvm_lv_retagv(&op->lo, op->vgname, name, add, del);
}

/* Rebase puts C above P: P keeps the identity S above it gave it. */
static int keep_parent_identity(struct op *op, struct rm *r)
{
	char tag[300];
	int rc;

	r->p_tag[0] = 0;
	if (!r->p || lvm_lv_tag_value(r->p, TAG_VIEW))
		return 0;
	snprintf(tag, sizeof(tag), TAG_VIEW "%s_%lld", r->s->uuid, (long long)r->s->ctime);
	rc = lvm_lv_retag(&op->lo, op->vgname, r->p->name, tag, NULL);
	if (rc == 0)
		snprintf(r->p_tag, sizeof(r->p_tag), "%s", tag);
	return rc;
}

/* Undo keep_parent_identity on P, named `pname`. */
static void drop_parent_identity(struct op *op, struct rm *r, const char *pname)
{
	if (!r->p_tag[0] || !pname[0])
		return;
	if (lvm_lv_retag(&op->lo, op->vgname, pname, NULL, r->p_tag) == 0)
		r->p_tag[0] = 0;
	else	/* the tag holds the identity P had anyway: harmless */
		vlog(LOG_WARNING, "%s/%s: tag %s left behind", op->vgname, pname, r->p_tag);
}

/*
 * Undo an rmdir whose merge failed before the point of no return: the
 * target's leaks (clusters a failed batch allocated and no table points
 * at) are freed, then S drops the intent (and a commit's parked view tag)
 * in one lvm2 commit, then P the identity tag the rebase gave it. Every
 * view reads as before. 0 when undone; 1 when past the point of no return
 * (a commit wrote into S, C already points past S: finish it instead);
 * -errno when the undo itself failed (the intent stays, for recovery).
 */
static int rm_undo(struct op *op, struct rm *r, const struct rm_ids *id, const char *tag, bool commit)
{
	const struct lvm_lv *s, *c, *t;
	const char *del[3] = { tag, NULL, NULL };
	struct qcow2_check_result cr;
	struct layer_io *io;
	const char *v;
	char *b = NULL;
	int rc;

	if (commit && r->m.past)
		return 1;
	if ((rc = vg_op_rescan(op)))
		return rc;
	s = vg_find_lv(op, id->s);
	c = vg_find_lv(op, id->c);
	if (!same_lv(s, id->su) || !same_lv(c, id->cu) || !(v = lvm_lv_tag_value(s, TAG_RMDIR)) ||
	    strcmp(v, tag + strlen(TAG_RMDIR))) {
		vlog(LOG_ERR, "%s: the layers are not as the merge left them: the rest is left to recovery",
		     r->label);
		return -EIO;
	}
	if (!commit) {
		const char *now;
		bool relinked;

		if ((rc = vg_probe_backing(op, c, &b)))
			return rc;
		now = lvm_backing_lv_name(op->vgname, b);
		relinked = !now || strcmp(now, id->s);
		free(b);
		if (relinked)
			return 1;
	}
	t = commit ? s : c;
	if (lvm_lv_open_rw(op->vg, t, &io) == 0) {
		if (qcow2_reclaim(io, 0, &cr) == 0 && cr.leaked_clusters_freed)
			vlog(LOG_NOTICE, "%s: freed %llu clusters the failed merge leaked in %s", r->label,
			     (unsigned long long)cr.leaked_clusters_freed, t->name);
		layer_flush(io);
		layer_close(io);
	}
	for (int i = 0; s->tags && s->tags[i]; i++)
		if (!strncmp(s->tags[i], TAG_VIEW_NEXT, strlen(TAG_VIEW_NEXT)))
			del[1] = s->tags[i];
	if ((rc = lvm_lv_retagv(&op->lo, op->vgname, id->s, NULL, del)))
		return rc;
	if (!commit)
		drop_parent_identity(op, r, id->p);
	return 0;
}

/* Before the point of no return: rm_undo, its outcome logged. */
static int step_undo(void *ctx, bool commit, int err)
{
	struct rm *r = ctx;
	int rc;

	vg_rm_release(r);
	rc = rm_undo(r->op, r, &r->id, r->tag, commit);
	if (rc == 0)
		vlog(LOG_NOTICE, "%s failed (%s): undone (every view reads as before)", r->label,
		     strerror(-err));
	else if (rc < 0)
		vlog(LOG_ERR, "%s failed (%s) and cannot be undone now (%s): the next mount finishes it",
		     r->label, strerror(-err), strerror(-rc));
	return rc;
}

/* Past the point of no return: finished at once, as the next mount would. */
static int step_finish(void *ctx, bool commit, int err)
{
	struct rm *r = ctx;
	int rc;

	(void)commit;
	(void)err;
	if ((rc = vg_op_rescan(r->op)) == 0)
		rc = vg_recover_rmdir_tag(r->op, r->tag);
	if (rc)
		vlog(LOG_ERR, "%s: cannot be finished now (%s): the next mount finishes it", r->label,
		     strerror(-rc));
	return rc;
}

static int step_open_views(void *ctx)
{
	struct rm *r = ctx;

	return vg_rm_open_views(r->op, r);
}

/* Does the direction fit in the target LV (rm_fits)? */
static int step_room(void *ctx, bool commit)
{
	struct rm *r = ctx;

	return rm_fits(r->op, r, commit);
}

/*
 * The intent tag on S, in one lvm2 commit with what the direction needs
 * later: a commit parks C's identity on S (TAG_VIEW_NEXT) for S to take
 * with C's name; a rebase first gives P the identity S above it gave it.
 */
static int step_record_intent(void *ctx, bool commit)
{
	struct rm *r = ctx;
	struct op *op = r->op;
	struct intent in = { 0 };
	char next_tag[300];
	int rc;

	in.kind = commit ? INTENT_RMDIR_COMMIT : INTENT_RMDIR_REBASE;
	snprintf(in.c, sizeof(in.c), "%s", r->c->name);
	snprintf(in.backing, sizeof(in.backing), "%s", !commit && r->p ? r->p->name : "");
	if ((rc = vg_intent_tag(&in, r->rm_tag, sizeof(r->rm_tag))) < 0)
		return rc;
	r->tag = r->rm_tag;
	if (commit) {
		const char *cview = lvm_lv_tag_value(r->c, TAG_VIEW);
		const char *add[3] = { r->tag, cview ? next_tag : NULL, NULL };

		if (cview)
			snprintf(next_tag, sizeof(next_tag), TAG_VIEW_NEXT "%s", cview);
		rc = lvm_lv_retagv(&op->lo, op->vgname, r->s->name, add, NULL);
	} else if (!(rc = keep_parent_identity(op, r))) {
		if ((rc = lvm_lv_retag(&op->lo, op->vgname, r->s->name, r->tag, NULL)))
			drop_parent_identity(op, r, r->p ? r->p->name : "");
	}
	if (rc)
		return rc;
	rm_ids_fill(r, &r->id);
	crash_point(commit ? "rmdir-commit-tagged" : "rmdir-rebase-tagged");
	return 0;
}

static const struct snap_merge_steps vg_merge_steps = {
	.fail_merge = "lvm-rmdir-merge",
	.fail_relink = "lvm-rmdir-relink",
	.merged = "rmdir-commit-merged",
	.copied = "rmdir-rebase-copied",
	.relinked = "rmdir-rebase-relinked",
	.relink_in_data_phase = true,
	.data_begin = step_data_begin,
	.data_end = step_data_end,
	.parent_backing = step_parent_backing,
	.replace_child = step_replace_child,
	.remove_s = step_remove_s,
	.undo = step_undo,
	.finish = step_finish,
	.open_views = step_open_views,
	.room = step_room,
	.record_intent = step_record_intent,
};

int vg_rm_run(struct op *op, struct rm *r, const char *tag, bool commit)
{
	r->op = op;
	r->tag = tag;
	r->m.label = r->label;
	return snap_merge_run(&vg_merge_steps, r, &r->m, commit);
}

static int remove_locked(struct op *op, const char *volume, const char *snap,
			 const struct store_progress *p)
{
	const struct pve_volume *v = pve_catalog_find(op->cat, volume);
	struct rm r = { 0 };
	char *pb = NULL;
	int rc, i;

	if (!v)
		return -ENOENT;
	if (v->format != PVE_FMT_QCOW2)
		return -EOPNOTSUPP;
	for (i = 0; i < v->nsnaps && strcmp(v->snaps[i].name, snap); i++)
		;
	if (i == v->nsnaps)
		return -ENOENT;
	if ((rc = busy_check(op, v)) < 0)
		return rc;
	r.s = v->snaps[i].lv;
	r.c = child_of(op, v, r.s->name);
	if (!r.c) {
		/* Nothing reads through it: removing the LV is the whole operation. */
		vlog(LOG_NOTICE, "%s/%s: snapshot %s has no child layer: removing %s", op->vgname,
		     volume, snap, r.s->name);
		return lvm_lv_remove(&op->lo, op->vgname, r.s->name);
	}
	if (other_children(op, r.s->name, r.c))
		return -EBUSY;
	if ((rc = vg_probe_backing(op, r.s, &pb)) < 0)
		return rc;
	if (pb) {
		const char *pn = lvm_backing_lv_name(op->vgname, pb);

		r.p = pn ? lvm_vg_find_lv(op->vg, pn) : NULL;
	}
	if (pb && !r.p) {
		vlog(LOG_ERR, "%s: backing layer %s is missing: refusing to merge", r.s->name, pb);
		free(pb);
		return -EIO;
	}
	free(pb);
	r.op = op;
	r.m.label = r.label;
	snprintf(r.label, sizeof(r.label), "%s/%s: deleting snapshot %s", op->vgname, volume, snap);
	rc = snap_merge_remove(&vg_merge_steps, &r, &r.m, p);
	vg_rm_release(&r);
	return rc;
}

int vg_snapshot_remove(struct store *s, const char *volume, const char *snap,
		       const struct store_progress *p)
{
	struct op op;
	int rc;

	rc = vg_op_begin(&op, s, true);
	if (rc == 0)
		rc = remove_locked(&op, volume, snap, p);
	vg_op_end(&op);
	return rc;
}

