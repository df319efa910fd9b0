/*
 * snap_merge: the rmdir merge driver of the stores with volume chains: the
 * commit-or-rebase choice, the step order, the points of no return and the
 * failure handling (snap_merge.h states the invariants by number).
 */
#include "store/snap_merge.h"

#include <errno.h>
#include <string.h>

#include "chain/merge.h"
#include "common/check.h"
#include "common/crash.h"
#include "common/log.h"

int snap_merge_choose(const char *label, struct chain *view_s, struct chain *view_c,
		      snap_merge_room_fn room, void *ctx, struct snap_merge_choice *out)
{
	bool same_size = chain_size(view_s) == chain_size(view_c);
	struct merge_plan plan;
	bool commit;
	int rc = merge_measure(view_c, view_s, &plan);

	if (rc)
		return rc;
	commit = plan.commit_bytes <= plan.rebase_bytes && same_size;
	rc = room(ctx, commit);
	if (rc == -ENOSPC && (commit || same_size)) {
		vlog(LOG_NOTICE, "%s: no room to %s: trying to %s", label, commit ? "commit" : "rebase",
		     commit ? "rebase" : "commit");
		commit = !commit;
		rc = room(ctx, commit);
	}
	if (rc)
		return rc;
	VSTORFS_CHECK(!commit || same_size);  /* (1) */
	out->commit = commit;
	out->moved = commit ? plan.commit_bytes : plan.rebase_bytes;
	out->other = commit ? plan.rebase_bytes : plan.commit_bytes;
	vlog(LOG_NOTICE, "%s by %s (%s moves %llu bytes, the other way %llu)", label,
	     commit ? "committing the child into it" : "rebasing the child onto its parent",
	     commit ? "commit" : "rebase", (unsigned long long)out->moved, (unsigned long long)out->other);
	return 0;
}

static void report(const struct store_progress *p, uint64_t done, uint64_t total)
{
	if (p && p->report)
		p->report(p->arg, done, total);
}

int snap_merge_open_writer(struct snap_merge *m, struct layer_io *wio, bool commit)
{
	m->wio = wio;
	return qcow2_writer_open(wio, (qcow2_fill_fn)merge_fill_from_view, commit ? m->view_s : m->view_c,
				 &m->w);
}

void snap_merge_close_writer(struct snap_merge *m)
{
	qcow2_writer_close(m->w);
	m->w = NULL;
	layer_close(m->wio);
	m->wio = NULL;
}

void snap_merge_release(struct snap_merge *m)
{
	snap_merge_close_writer(m);
	if (m->view_s)
		chain_put(m->view_s);
	if (m->view_c)
		chain_put(m->view_c);
	if (m->view_p)
		chain_put(m->view_p);
	m->view_s = m->view_c = m->view_p = NULL;
}

/* Commit (6): C's data into S, then S takes C's name. */
static int run_commit(const struct snap_merge_steps *st, void *ctx, struct snap_merge *m)
{
	int rc = st->data_begin(ctx);

	if (rc)
		return rc;
	m->begun = true;
	rc = crash_fail(st->fail_merge);
	if (!rc) {
		/* The first write into S changes view S: the point of no return (7). */
		m->past = true;
		rc = merge_commit(m->view_c, m->w, m->label);
	}
	if ((rc = st->data_end(ctx, true, rc)))
		return rc;
	VSTORFS_CHECK(!m->stop);  /* (5) */
	crash_point(st->merged);
	if (st->settle_room)
		st->settle_room(ctx);
	snap_merge_release(m);
	return st->replace_child(ctx);
}

/* Rebase (6): S's data into C (no view changes: C read those bytes through S), the
 * relink of C to P, then S removed. */
static int run_rebase(const struct snap_merge_steps *st, void *ctx, struct snap_merge *m)
{
	int rc = st->data_begin(ctx);

	if (rc)
		return rc;
	m->begun = true;
	rc = crash_fail(st->fail_merge);
	if (!rc)
		rc = merge_rebase(m->view_c, m->view_s, m->view_p, m->w, m->label);
	if (!st->relink_in_data_phase && (rc = st->data_end(ctx, false, rc)))
		return rc;
	if (rc == 0) {
		crash_point(st->copied);
		if ((rc = crash_fail(st->fail_relink)) == 0) {
			/* C may point past S from here on: the point of no return (7). */
			m->past = true;
			rc = qcow2_writer_set_backing(m->w, st->parent_backing(ctx));
		}
	}
	if (st->relink_in_data_phase)
		rc = st->data_end(ctx, false, rc);
	if (rc)
		return rc;
	VSTORFS_CHECK(!m->stop && m->past);  /* (5), (7) */
	crash_point(st->relinked);
	if (st->settle_room)
		st->settle_room(ctx);
	snap_merge_release(m);
	return st->remove_s(ctx);
}

int snap_merge_run(const struct snap_merge_steps *st, void *ctx, struct snap_merge *m, bool commit)
{
	VSTORFS_CHECK(m->w && m->view_s && m->view_c);  /* (4) */
	m->begun = m->past = m->stop = false;
	return commit ? run_commit(st, ctx, m) : run_rebase(st, ctx, m);
}

/* rmdir's answer to a failure `err` of snap_merge_run (7): `err`, or 0 when finished at once. */
static int settle(const struct snap_merge_steps *st, void *ctx, struct snap_merge *m, bool commit, int err)
{
	int rc;

	VSTORFS_CHECK(err < 0);
	if (m->stop) {
		/* No rename, no removal, no relink, no undo: the intent stays for recovery (5). */
		if (st->stopped)
			st->stopped(ctx, err);
		return err;
	}
	rc = st->undo(ctx, commit, err);
	if (rc <= 0)
		return err;  /* undone (nothing happened), or left to recovery: the error stands */
	VSTORFS_CHECK(m->begun);  /* (7): nothing is past the point before the data phase */
	snap_merge_release(m);
	vlog(LOG_ERR, "%s failed past the point of no return (%s): finishing it", m->label, strerror(-err));
	if (st->finish(ctx, commit, err))
		return err;
	vlog(LOG_NOTICE, "%s: done", m->label);
	return 0;
}

int snap_merge_remove(const struct snap_merge_steps *st, void *ctx, struct snap_merge *m,
		      const struct store_progress *prog)
{
	struct snap_merge_choice ch;
	int rc;

	if ((rc = st->open_views(ctx)) ||
	    (rc = snap_merge_choose(m->label, m->view_s, m->view_c, st->room, ctx, &ch)))
		return rc;
	/* The room is held (3): what fails from here on is the disk, not the space. */
	if ((rc = st->record_intent(ctx, ch.commit)))
		return rc;
	report(prog, 0, ch.moved);
	rc = snap_merge_run(st, ctx, m, ch.commit);
	if (rc)
		return settle(st, ctx, m, ch.commit, rc);
	if (st->forget)
		st->forget(ctx);
	vlog(LOG_NOTICE, "%s: done", m->label);
	report(prog, ch.moved, ch.moved);
	return 0;
}
