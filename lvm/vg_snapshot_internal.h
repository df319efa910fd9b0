/*
 * The pieces of a snapshot operation on a VG that mkdir/rmdir
 * (vg_snapshot.c) and recovery (vg_recover.c) share.
 */
#ifndef VSTORFS_VG_SNAPSHOT_INTERNAL_H
#define VSTORFS_VG_SNAPSHOT_INTERNAL_H

#include <stdbool.h>

#include "chain/chain.h"
#include "chain/qcow2_writer.h"
#include "lvm/lvm.h"
#include "store/intent.h"
#include "store/store.h"

#define TAG_MKDIR "vstorfs-mkdir="
#define TAG_RMDIR "vstorfs-rmdir="
#define SCRATCH_PREFIX "vstorfs-new-"
#define LOCK_TIMEOUT_S 60

/* One operation on one VG, under its storage lock. */
struct op {
	const struct store_config *o;
	struct lvm_opts lo;
	const char *vgname;
	struct lvm_vg *vg;        /* newest scan, under the lock */
	struct pve_catalog *cat;  /* of vg */
	int lockfd;
};

/* rmdir's layers: the snapshot S, its child C, its parent P (may be NULL). */
struct rm {
	const struct lvm_lv *s, *c, *p;
	struct chain *view_s, *view_c, *view_p;
	struct layer_io *wio;
	struct qcow2_writer *w;
	char label[600];
	bool past;       /* the point of no return may have been passed (a commit's first write into S, a rebase's relink of C) */
	bool hands_off;  /* the cluster lock was not taken back or the layers changed: only recovery may act */
	char p_tag[300]; /* the TAG_VIEW identity tag this rebase gave P, or "" */
};

/* The LV tag recording `in` (TAG_MKDIR or TAG_RMDIR + store/intent.c's tag form): 0 or <0. */
int vg_intent_tag(const struct intent *in, char *buf, size_t len);

/* Lock the VG (refusing what is not ours to change when writing) and scan it. */
int vg_op_begin(struct op *op, struct store *s, bool writing);
void vg_op_end(struct op *op);
int vg_op_rescan(struct op *op);

const struct lvm_lv *vg_find_lv(const struct op *op, const char *name);
int vg_probe_backing(struct op *op, const struct lvm_lv *lv, char **backing);
int vg_rm_open_views(struct op *op, struct rm *r);
int vg_rm_open_writer(struct op *op, struct rm *r, bool commit);
void vg_rm_release(struct rm *r);
/* The steps after the intent tag, shared by rmdir and recovery. */
int vg_commit_steps(struct op *op, struct rm *r, const char *tag);
int vg_rebase_steps(struct op *op, struct rm *r);
/* The last step of a commit: S_lv, now named `name`, drops the intent and takes view C's identity. */
int vg_commit_finish_tags(struct op *op, const struct lvm_lv *s_lv, const char *name, const char *intent);
/* Finish at once the rmdir whose intent tag is `tag` (vg_recover.c); 0 also when no LV carries it. */
int vg_recover_rmdir_tag(struct op *op, const char *tag);

#endif
