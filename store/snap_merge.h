/*
 * snap_merge: the rmdir merge driver every store with volume chains shares
 * (S: the layer removed, C: its child, P: S's parent). Both directions give
 * every surviving view the same bytes: commit writes C's data into S and S
 * takes C's name; rebase copies S's data into C and relinks C to P. The
 * store fills a struct snap_merge_steps with its platform steps (how a
 * layer is renamed or removed, how the data phase is fenced on a shared
 * storage, how an undo and a finish are done) and this module runs the
 * step order, the points of no return and the failure handling once.
 *
 * Invariants of the choice (VSTORFS_CHECK'd in debug builds):
 * (1) Commit is chosen only between layers of one virtual size: S taking
 *     C's name must not resize the disk.
 * (2) Of the allowed directions, the one moving fewer bytes is tried first;
 *     the other only when the first has no room (-ENOSPC).
 * (3) The choice is made, and its room held, before the store records its
 *     intent: what fails after the intent is the disk, not the space.
 *
 * Invariants of the steps (snap_merge_remove, snap_merge_run):
 * (4) The steps run only with the intent recorded and the writer open on
 *     the target (S for commit, C for rebase).
 * (5) The data copy runs between data_begin and data_end: on a shared
 *     storage the cluster lock is released for it and the chain re-checked
 *     when it is taken back; a chain that changed, or a lock not had back,
 *     sets `stop` and no name, tag or backing string changes after it.
 * (6) Step order, commit: data_begin; `begun`; fail point merge; `past`;
 *     C's data into S; data_end; crash point merged; release; S over C.
 *     Rebase: data_begin; `begun`; fail point merge; S's data into C;
 *     [data_end; crash point copied]; fail point relink; `past`; C's backing
 *     string set to P; [data_end when the store relinks in the data phase];
 *     crash point relinked; release; S removed.
 * (7) Point of no return: commit, the first write into S (the store reads
 *     it as `begun` or `past`); rebase, the relink of C. A failure before
 *     it is undone (every view reads as before, the error stands); past it
 *     the operation is finished at once as recovery would, and success is
 *     reported only when that worked. With `stop` neither is tried.
 */
#ifndef VSTORFS_SNAP_MERGE_H
#define VSTORFS_SNAP_MERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "chain/chain.h"
#include "chain/qcow2_writer.h"
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

/* One merge under way: the views S, C, P (NULL when S has no parent), the writer into the target. */
struct snap_merge {
	struct chain *view_s, *view_c, *view_p;
	struct layer_io *wio;
	struct qcow2_writer *w;
	const char *label;  /* "<store>/<volume>: deleting snapshot <snap>", the store's buffer */
	bool begun;         /* the data phase began: the merge may have written its target */
	bool past;          /* the point of no return may have been passed (see (7)) */
	bool stop;          /* lock not had back or chain changed: only recovery may act (5) */
};

/* Open the writer on `wio` (taken, closed on failure) into the target of `commit`. */
int snap_merge_open_writer(struct snap_merge *m, struct layer_io *wio, bool commit);
void snap_merge_close_writer(struct snap_merge *m);
/* Close the writer and put the views; safe to repeat. */
void snap_merge_release(struct snap_merge *m);

/* A store's platform steps; ctx is the store's rmdir state holding the struct snap_merge. */
struct snap_merge_steps {
	/* Crash-point names (common/crash.h): fail points before the merge and the relink,
	 * crash points after a commit's merge, a rebase's copies and its relink. */
	const char *fail_merge, *fail_relink;
	const char *merged, *copied, *relinked;
	/* LVM relinks inside the data phase: the backing string is image data, not VG
	 * metadata. dir/ relinks only under the lock, the chain checked first. */
	bool relink_in_data_phase;
	/* Fence the data copy (5): begin may refuse (the chain is not what was measured). */
	int (*data_begin)(void *ctx);
	/* Take the lock back and check; returns rc or the check's error, sets m->stop. */
	int (*data_end)(void *ctx, bool commit, int rc);
	/* The backing string C is relinked to (P's), NULL for none. */
	const char *(*parent_backing)(void *ctx);
	/* Before the release after the data phase (dir: give back unused room); may be NULL. */
	void (*settle_room)(void *ctx);
	int (*replace_child)(void *ctx);  /* commit: S takes C's name (and the store's last step) */
	int (*remove_s)(void *ctx);       /* rebase: S removed (and the store's last step) */
	/* Before the point of no return: 0 undone, 1 past it after all (finish instead),
	 * <0 the undo failed (logged; the intent stays for recovery). */
	int (*undo)(void *ctx, bool commit, int err);
	/* Past it: finish as recovery would; 0 or the error (logged by the store). */
	int (*finish)(void *ctx, bool commit, int err);
	/* `stop` was set: log what is left (may be NULL). */
	void (*stopped)(void *ctx, int err);

	/* rmdir's own steps around the merge (snap_merge_remove); recovery needs none. */
	int (*open_views)(void *ctx);  /* fill m->view_s, view_c, view_p */
	snap_merge_room_fn room;
	/* Record the intent of the chosen direction (and pass its crash point);
	 * on failure give back the room `room` held. */
	int (*record_intent)(void *ctx, bool commit);
	void (*forget)(void *ctx);  /* after success: the store's bookkeeping (may be NULL) */
};

/*
 * rmdir of S, once the store has found S, C and P and refused what is not
 * its to change: open the views, choose and hold the room (3), record the
 * intent, run the steps (6), settle a failure (7), report progress and the
 * outcome under m->label. 0 or the error that stands; the caller releases m.
 */
int snap_merge_remove(const struct snap_merge_steps *st, void *ctx, struct snap_merge *m,
		      const struct store_progress *prog);

/* The steps after the intent (6), for rmdir and for recovery's merge again: 0 or the error. */
int snap_merge_run(const struct snap_merge_steps *st, void *ctx, struct snap_merge *m, bool commit);

#endif
