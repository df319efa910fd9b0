/*
 * snap_recover: the recovery rules of an interrupted snapshot rmdir,
 * written once for the stores with volume chains (dir/dir_chain_ops.c,
 * lvm/vg_recover.c). The store reads the facts from its names, tags and
 * backing strings; this module says which step is next. Every rule leaves
 * every surviving view reading what it read before the rmdir began, because
 * a merge re-run changes no byte any view reads (snap_merge.h (6)).
 *
 * Rules, in order:
 * (1) The last rename or removal is done (dir: S is gone; lvm: S already
 *     carries C's name): only the bookkeeping is left.
 * (2) C is gone: a commit had removed C (lvm: two steps), so S takes C's
 *     name; a rebase has lost its child: leave it for an administrator.
 * (3) Rebase, C already points past S (at P, or at nothing when S had no
 *     parent): the relink is done, S is removed.
 * (4) Otherwise the merge runs again from the start (commit / rebase).
 */
#ifndef VSTORFS_SNAP_RECOVER_H
#define VSTORFS_SNAP_RECOVER_H

#include <stdbool.h>

struct snap_recover_facts {
	bool commit;          /* the intent's direction */
	bool last_step_done;  /* (1) */
	bool c_exists;        /* (2) */
	bool c_relinked;      /* (3) rebase: C's backing is P's (or none when S had no parent) */
};

enum snap_recover_step {
	SNAP_RECOVER_BOOKKEEPING,  /* (1) */
	SNAP_RECOVER_RENAME,       /* (2) commit: S takes C's name */
	SNAP_RECOVER_REFUSE,       /* (2) rebase: -EIO, logged by the store */
	SNAP_RECOVER_REMOVE_S,     /* (3) */
	SNAP_RECOVER_MERGE_AGAIN,  /* (4) */
};

enum snap_recover_step snap_recover_rmdir(const struct snap_recover_facts *f);

#endif
