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
#include "store/snap_merge.h"
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

/* The layers by name and uuid, as measured: what the data phase and an undo re-find. */
struct rm_ids {
	char s[256], c[256], p[256], su[80], cu[80], pu[80];
};

/* rmdir's layers: the snapshot S, its child C, its parent P (may be NULL). */
struct rm {
	const struct lvm_lv *s, *c, *p;
	struct snap_merge m; /* views, writer, how far the steps got (m.stop: only recovery may act) */
	char label[600];
	char p_tag[300];     /* the TAG_VIEW identity tag this rebase gave P, or "" */
	struct op *op;       /* the operation the steps run in */
	const char *tag;     /* the intent tag on S */
	char rm_tag[700];    /* rmdir: the intent tag it wrote (tag points here) */
	struct rm_ids id;    /* rmdir: the layers as tagged, for an undo */
	struct rm_ids data;  /* the layers as the data phase began */
	bool suspended;      /* the cluster lock is released for the data phase */
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
/* The steps after the intent tag `tag` (store/snap_merge.h (6)), shared by rmdir and recovery. */
int vg_rm_run(struct op *op, struct rm *r, const char *tag, bool commit);
/* The last step of a commit: S_lv, now named `name`, drops the intent and takes view C's identity. */
int vg_commit_finish_tags(struct op *op, const struct lvm_lv *s_lv, const char *name, const char *intent);
/* Finish at once the rmdir whose intent tag is `tag` (vg_recover.c); 0 also when no LV carries it. */
int vg_recover_rmdir_tag(struct op *op, const char *tag);

#endif
