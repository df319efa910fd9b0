/*
 * snap_merge: what every store's rmdir of a snapshot layer shares (S: the
 * layer removed, C: its child, P: S's parent). Both directions give every
 * surviving view the same bytes: commit writes C's data into S and S takes
 * C's name; rebase copies S's data into C and relinks C to P. The store
 * supplies the room check for a direction; this module measures, chooses,
 * logs the choice once and reports progress, identically for lvm/ and dir/.
 *
 * Invariants of the choice (VSTORFS_CHECK'd in debug builds):
 * (1) Commit is chosen only between layers of one virtual size: S taking
 *     C's name must not resize the disk.
 * (2) Of the allowed directions, the one moving fewer bytes is tried first;
 *     the other only when the first has no room (-ENOSPC).
 * (3) The choice is made, and its room held, before the store records its
 *     intent: what fails after the intent is the disk, not the space.
 *
 * The step order after the intent, the points of no return and recovery
 * stay each store's own (dir/dir_chain_ops.c, lvm/vg_snapshot.c): one
 * driver calling both stores' steps is not done yet.
 */
#ifndef VSTORFS_SNAP_MERGE_H
#define VSTORFS_SNAP_MERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "chain/chain.h"
#include "store/store.h"

/* The store's room check for a direction: 0 (room held), -ENOSPC, or another error. */
typedef int (*snap_merge_room_fn)(void *ctx, bool commit);

struct snap_merge_choice {
	bool commit;
	uint64_t moved;  /* bytes the chosen direction copies */
	uint64_t other;  /* bytes the other one would have */
};

/*
 * Measure C over S, choose the direction, make room for it through `room`
 * (the other direction on -ENOSPC when allowed) and log the choice under
 * `label`. 0 with *out filled, or the error of the last room check or of
 * the measurement (nothing held then).
 */
int snap_merge_choose(const char *label, struct chain *view_s, struct chain *view_c,
		      snap_merge_room_fn room, void *ctx, struct snap_merge_choice *out);

void snap_merge_report(const struct store_progress *p, uint64_t done, uint64_t total);

#endif
