/*
 * dir_snapshot: what the directory store's snapshot operations share.
 * Layers, each using only those below it: dir_op.c (the operation frame,
 * intent file, snapshot-times sidecar); dir_chain_ops.c (volume chains) and
 * dir_isnap_ops.c (internal snapshots); dir_recover.c (recovery, which
 * calls both); dir_snapshot.c (the mkdir/rmdir entry points).
 */
#ifndef VSTORFS_DIR_SNAPSHOT_H
#define VSTORFS_DIR_SNAPSHOT_H

#include <limits.h>

#include "dir/dir_store.h"
#include "store/intent.h"

/* One operation: the lock held, a fresh listing taken under it. */
struct dir_op {
	struct store *s;
	struct dir_store_priv *p;
	struct dir_pve_cfg pc;
	int lockfd;
	struct store_listing *l;
};

int dir_op_begin(struct dir_op *op, struct store *s, bool writing);
void dir_op_end(struct dir_op *op);

/* The files an operation on volume <name> in directory <dir> touches. */
struct dir_op_paths {
	char dir[PATH_MAX];
	char name[NAME_MAX + 1];
	char vol[PATH_MAX];       /* <dir>/<name> */
	char scratch[PATH_MAX];   /* <dir>/.vstorfs-new-<name>.tmp */
	char intent[PATH_MAX];    /* <dir>/.vstorfs-intent-<name>.op */
	char times[PATH_MAX];     /* <dir>/.vstorfs-snaps-<name>.times */
};

int dir_op_paths(struct dir_op_paths *n, const char *dir, const char *vol);
int dir_op_snap_path(const struct dir_op_paths *n, const char *snap, char *out, size_t len);
int dir_intent_clear(struct store *s, const struct dir_op_paths *n);
/* Write n's intent file (atomic, synced): 0 or <0 (-EINVAL/-ENAMETOOLONG: not encodable). */
int dir_intent_write(struct store *s, const struct dir_op_paths *n, const struct intent *in);
/* For VSTORFS_CHECK: n's intent file decodes to `in` (dir_op.c, invariant 1). */
bool dir_intent_holds(struct store *s, const struct dir_op_paths *n, const struct intent *in);
int dir_snaptime_set(struct store *s, const struct dir_op_paths *n, const char *snap, int64_t t);
/* -EBUSY (logged) when a process holds rel open for writing (qemu's OFD lock). */
int dir_file_busy(struct store *s, const char *rel);
/* The end of the qcow2 image in file rel: past its last cluster with a refcount. */
int dir_image_end(struct store *s, const char *rel, uint64_t *end);
const struct store_volume *dir_find_volume(const struct store_listing *l, const char *volume);

/* Volume chains (dir_chain_ops.c): mkdir/rmdir of view vi of a Proxmox volume chain. */
int dir_chain_take(struct dir_op *op, const struct store_volume *vol, const char *snap);
int dir_chain_remove(struct dir_op *op, const struct store_volume *vol, int vi,
		     const struct store_progress *prog);

/* Internal snapshots (dir_isnap_ops.c). */
int dir_isnap_take(struct dir_op *op, const struct store_volume *vol, const char *snap);
int dir_isnap_remove(struct dir_op *op, const struct store_volume *vol, int view);

/* Recovery of one intent file's operation: 0 done, 1 not this kind, <0 failed. */
int dir_recover_chain(struct store *s, const struct dir_op_paths *n, const struct intent *in);
int dir_recover_isnap(struct store *s, const struct dir_op_paths *n, const struct intent *in);
/* Recover the operation n->intent records (the caller holds the lock): 0 or <0. */
int dir_recover_one(struct store *s, const struct dir_op_paths *n);
/* Before an operation on vol: an intent left by a crash that recovery could not
 * finish at mount (the image was busy then) is finished now, and the listing
 * rescanned. 0, or -EBUSY when it still cannot be. */
int dir_op_settle(struct dir_op *op, const struct store_volume **vol, const char *volume);

#endif
