/*
 * vg_recover: finish or undo, at the next mount, a snapshot operation a
 * crash interrupted. The intent is an LV tag (vg_snapshot.c explains the
 * steps and which state each tag and set of names means); nothing here
 * runs before the storage lock is held.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "lvm/lvm_change.h"
#include "lvm/vg_snapshot_internal.h"
#include "lvm/vg_store.h"
#include "store/pve_cluster.h"
#include "store/snap_recover.h"


static int recover_mkdir(struct op *op, const struct lvm_lv *lv, const char *value)
{
	const char *volume = lv->name + strlen(SCRATCH_PREFIX), *snap;
	char tag[300], snap_lv[256];
	struct intent in;
	bool have_v, have_s;
	int rc;

	if (intent_tag_decode(value, INTENT_MKDIR_CHAIN, &in) || vg_intent_tag(&in, tag, sizeof(tag))) {
		vlog(LOG_ERR, "%s/%s: malformed tag " TAG_MKDIR "%.60s: leaving it for an administrator",
		     op->vgname, lv->name, value);
		return -EIO;
	}
	snap = in.snap;
	if (strncmp(lv->name, SCRATCH_PREFIX, strlen(SCRATCH_PREFIX))) {
		/* State D: the new overlay already carries the volume's name. */
		vlog(LOG_NOTICE, "%s/%s: finishing interrupted snapshot %s", op->vgname, lv->name, snap);
		return lvm_lv_retag(&op->lo, op->vgname, lv->name, NULL, tag);
	}
	if (pve_snapshot_lv_name(volume, snap, snap_lv, sizeof(snap_lv)) < 0)
		return -EINVAL;
	have_v = vg_find_lv(op, volume) != NULL;
	have_s = vg_find_lv(op, snap_lv) != NULL;
	if (have_v && !have_s) {
		/* States A/B: the volume was not touched: drop the scratch LV. */
		vlog(LOG_NOTICE, "%s/%s: undoing interrupted snapshot %s (nothing else was changed)",
		     op->vgname, volume, snap);
		return lvm_lv_remove(&op->lo, op->vgname, lv->name);
	}
	if (!have_v && have_s) {
		/* State C: the overlay was flushed before the rename: put it in place. */
		vlog(LOG_NOTICE, "%s/%s: finishing interrupted snapshot %s (renaming %s)",
		     op->vgname, volume, snap, lv->name);
		rc = lvm_lv_rename(&op->lo, op->vgname, lv->name, volume);
		return rc ? rc : lvm_lv_retag(&op->lo, op->vgname, volume, NULL, tag);
	}
	vlog(LOG_ERR, "%s/%s: interrupted snapshot %s: %s and %s %s: leaving it for an administrator",
	     op->vgname, lv->name, snap, volume, snap_lv, have_v ? "both exist" : "are both missing");
	return -EIO;
}

/* An interrupted rmdir: "commit:<child>" or "rebase:<child>:<parent or ->". */
static int recover_rmdir(struct op *op, const struct lvm_lv *lv, const char *value)
{
	struct rm r = { .s = lv };
	struct snap_recover_facts f = { 0 };
	char tag[700];
	struct intent in;
	const char *cname = in.c, *pname = in.backing;
	bool commit;
	char *b = NULL;
	int rc;

	if (intent_tag_decode(value, INTENT_RMDIR_COMMIT, &in) || vg_intent_tag(&in, tag, sizeof(tag))) {
		vlog(LOG_ERR, "%s/%s: malformed tag " TAG_RMDIR "%.60s: leaving it for an administrator",
		     op->vgname, lv->name, value);
		return -EIO;
	}
	commit = in.kind == INTENT_RMDIR_COMMIT;
	r.m.label = r.label;
	snprintf(r.label, sizeof(r.label), "%s/%s: finishing interrupted snapshot deletion",
		 op->vgname, lv->name);
	r.c = vg_find_lv(op, cname);
	f.commit = commit;
	f.last_step_done = commit && !strcmp(lv->name, cname);
	f.c_exists = r.c != NULL;
	if (!commit && r.c) {
		const char *now;

		if ((rc = vg_probe_backing(op, r.c, &b)))
			return rc;
		now = lvm_backing_lv_name(op->vgname, b);
		f.c_relinked = pname[0] ? now && !strcmp(now, pname) : !b;
		free(b);
	}
	switch (snap_recover_rmdir(&f)) {
	case SNAP_RECOVER_BOOKKEEPING:
		vlog(LOG_NOTICE, "%s (only the intent tag was left)", r.label);
		return vg_commit_finish_tags(op, lv, cname, tag);
	case SNAP_RECOVER_RENAME:
		vlog(LOG_NOTICE, "%s (rename to %s)", r.label, cname);
		rc = lvm_lv_rename(&op->lo, op->vgname, lv->name, cname);
		return rc ? rc : vg_commit_finish_tags(op, lv, cname, tag);
	case SNAP_RECOVER_REFUSE:
		vlog(LOG_ERR, "%s: child layer %s is missing: leaving it alone", r.label, cname);
		return -EIO;
	case SNAP_RECOVER_REMOVE_S:
		vlog(LOG_NOTICE, "%s (child already relinked: removing %s)", r.label, lv->name);
		return lvm_lv_remove(&op->lo, op->vgname, lv->name);
	case SNAP_RECOVER_MERGE_AGAIN:
		break;
	}
	if (!commit) {
		r.p = pname[0] ? vg_find_lv(op, pname) : NULL;
		if (pname[0] && !r.p)
			return -EIO;
	}
	vlog(LOG_NOTICE, "%s (%s)", r.label, commit ? "commit into it again" : "rebase again");
	rc = vg_rm_open_views(op, &r);
	if (!rc)
		rc = vg_rm_open_writer(op, &r, commit);
	if (!rc)
		rc = vg_rm_run(op, &r, tag, commit);
	vg_rm_release(&r);
	return rc;
}

int vg_recover_rmdir_tag(struct op *op, const char *tag)
{
	for (int i = 0; i < op->vg->nlvs; i++) {
		const struct lvm_lv *lv = &op->vg->lvs[i];

		for (int t = 0; lv->tags && lv->tags[t]; t++)
			if (!strcmp(lv->tags[t], tag)) {
				char *value = strdup(tag + strlen(TAG_RMDIR));
				int rc = value ? recover_rmdir(op, lv, value) : -ENOMEM;

				free(value);
				return rc;
			}
	}
	return 0;
}

static int recover_vg(struct store *s)
{
	struct op op;
	int rc = vg_op_begin(&op, s, false), done = 0;

	while (rc == 0) {
		const char *snap = NULL, *rm = NULL;
		char *copy;
		int i;

		for (i = 0; i < op.vg->nlvs && !snap && !rm; i++) {
			snap = lvm_lv_tag_value(&op.vg->lvs[i], TAG_MKDIR);
			rm = lvm_lv_tag_value(&op.vg->lvs[i], TAG_RMDIR);
			/* On a shared VG, another node's VM is that node's to finish. */
			if ((snap || rm) && pve_lv_owned_elsewhere(s->name, op.vg->lvs[i].name))
				snap = rm = NULL;
		}
		if (!snap && !rm)
			break;
		if (++done > 64) {
			rc = -EIO;
			break;
		}
		copy = strdup(snap ? snap : rm);
		if (!copy)
			rc = -ENOMEM;
		else if (snap)
			rc = recover_mkdir(&op, &op.vg->lvs[i - 1], copy);
		else
			rc = recover_rmdir(&op, &op.vg->lvs[i - 1], copy);
		free(copy);
		if (rc == 0)
			rc = vg_op_rescan(&op);
	}
	if (rc < 0)
		vlog(LOG_ERR, "%s: recovering an interrupted snapshot operation failed: %s", s->name,
		     strerror(-rc));
	vg_op_end(&op);
	return rc == -ENOENT ? 0 : rc;
}

int vg_recover(struct store *s)
{
	return s->cfg->read_only ? 0 : recover_vg(s);
}
