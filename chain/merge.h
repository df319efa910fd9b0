/*
 * merge: folding one layer of a chain into a neighbour, the two ways
 * deleting a snapshot can go.
 *
 *   commit: every range the child layer C has data of its own for (its top
 *           layer answers in view C) is written into the snapshot layer S,
 *           as view C reads it. Afterwards S reads like C did. Only for
 *           layers of the same virtual size (-EINVAL otherwise).
 *   rebase: every range where C has nothing of its own but S has, and S's
 *           bytes differ from the parent view P, is written into C as view
 *           S reads it; so is every range past the end of a shorter S
 *           (where C reads zeros through S) that C does not cover and P
 *           reads other than zeros. Afterwards C reads the same with P as
 *           its backing.
 *
 * Writes always go in whole allocation units of the target, with the bytes
 * a view above the target already reads there, so every surviving view
 * reads the same bytes at every instant; re-running an interrupted merge
 * is harmless. Progress is logged every few seconds.
 */
#ifndef VSTORFS_MERGE_H
#define VSTORFS_MERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "chain.h"
#include "qcow2_writer.h"

struct merge_plan {
	uint64_t commit_bytes;   /* data commit moves (C's own) */
	uint64_t rebase_bytes;   /* data rebase moves (S's own, not under C) */
};

/* Measure both directions. view_c: chain from C down; view_s: chain from S down. */
int merge_measure(struct chain *view_c, struct chain *view_s, struct merge_plan *plan);

/* Host bytes the target would need beyond what it has (for -ENOSPC before any change). */
int merge_commit_need(struct chain *view_c, struct qcow2_writer *into_s, uint64_t *bytes);
/* view_p as for merge_rebase; its bytes are not compared (an upper bound). */
int merge_rebase_need(struct chain *view_c, struct chain *view_s, struct chain *view_p,
		      struct qcow2_writer *into_c, uint64_t *bytes);

/*
 * Tell fn every host cluster of `into` the merge would write in place (the
 * clusters qcow2_writer_need does not count: the image owns them already,
 * but a file may hold a hole there), each once, in guest order. Writes
 * nothing; a negative return of fn stops the walk and is returned.
 */
typedef int (*merge_host_fn)(void *ctx, uint64_t host, uint64_t len);
int merge_in_place(bool commit, struct chain *view_c, struct chain *view_s, struct chain *view_p,
		   struct qcow2_writer *into, merge_host_fn fn, void *ctx);

int merge_commit(struct chain *view_c, struct qcow2_writer *into_s, const char *label);
/* view_p may be NULL (S has no backing layer: compare against zeros). */
int merge_rebase(struct chain *view_c, struct chain *view_s, struct chain *view_p,
		 struct qcow2_writer *into_c, const char *label);

/*
 * The whole merge in one call, for qcow2merge and the writer's fuzz target
 * (the daemon runs the same steps itself, between its crash-safety tags):
 * -ENOSPC before any write when the target's room (or its refcount
 * table's reach) is short, then commit
 * into `into` (S's writer) or rebase into it (C's writer) and point C at
 * `new_backing` (NULL: no backing layer).
 */
int merge_run(bool commit, struct chain *view_c, struct chain *view_s, struct chain *view_p,
	      struct qcow2_writer *into, const char *new_backing, const char *label);

/* A qcow2_fill_fn reading the view (a struct chain *) a target layer belongs to. */
int merge_fill_from_view(void *view, void *buf, uint64_t len, uint64_t off);

#endif
