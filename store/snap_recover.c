/*
 * snap_recover: which step an interrupted rmdir takes next (snap_recover.h
 * numbers the rules).
 */
#include "store/snap_recover.h"

enum snap_recover_step snap_recover_rmdir(const struct snap_recover_facts *f)
{
	if (f->last_step_done)
		return SNAP_RECOVER_BOOKKEEPING;                              /* (1) */
	if (!f->c_exists)
		return f->commit ? SNAP_RECOVER_RENAME : SNAP_RECOVER_REFUSE; /* (2) */
	if (!f->commit && f->c_relinked)
		return SNAP_RECOVER_REMOVE_S;                                 /* (3) */
	return SNAP_RECOVER_MERGE_AGAIN;                                      /* (4) */
}
