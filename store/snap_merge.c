/*
 * snap_merge: the commit-or-rebase choice of a snapshot rmdir, shared by
 * the stores (snap_merge.h states its invariants).
 */
#include "store/snap_merge.h"

#include <errno.h>

#include "chain/merge.h"
#include "common/check.h"
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

void snap_merge_report(const struct store_progress *p, uint64_t done, uint64_t total)
{
	if (p && p->report)
		p->report(p->arg, done, total);
}
