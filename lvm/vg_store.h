/*
 * vg_store: an LVM volume group holding Proxmox VE volumes, as a store
 * (store/store.h). Listing: lvm2's report of the VG grouped by Proxmox's
 * names (pve_names.c), every layer's header probed once. Snapshot
 * operations: vg_snapshot.c; recovery: vg_recover.c.
 */
#ifndef VSTORFS_VG_STORE_H
#define VSTORFS_VG_STORE_H

#include "lvm/lvm.h"
#include "store/store.h"

/* Tag carrying a snapshot view's identity across merges of its neighbours:
 * "vstorfs-view=<uuid of the layer taken above it>_<its creation time>". */
#define TAG_VIEW "vstorfs-view="

/* The registry entry (lvm_kind.c): VG names, "all", devices=. */
extern const struct store_kind lvm_store_kind;
/* devices= of cfg: NULL-terminated, or NULL (lvm2 scans what it would). */
char **lvm_store_devices(const struct store_config *cfg);

int lvm_store_open(const char *vg, const struct store_config *cfg, struct store **out);
/*
 * The same, its commands run in the process's one shell (lvm_shell.h, the
 * shell of no store) instead of a shell of its own: for a tool that opens
 * thousands of stores in turn, one at a time (powerloss-check), where a
 * shell start per store would be most of the cost.
 */
int lvm_store_open_process_shell(const char *vg, const struct store_config *cfg,
				 struct store **out);
/* Every VG lvm2 sees (for source "all"); free each name and the array. */
int lvm_store_list_vgs(const struct store_config *cfg, char ***names);

/* The lvm2 options a store's commands run with. */
void vg_store_lvm_opts(const struct store *s, struct lvm_opts *lo);

/* Snapshot operations and recovery (vg_snapshot.c, vg_recover.c). */
int vg_snapshot_take(struct store *s, const char *volume, const char *snap,
		     const struct store_progress *p);
int vg_snapshot_remove(struct store *s, const char *volume, const char *snap,
		       const struct store_progress *p);
int vg_recover(struct store *s);

/* The value of lv's first tag starting with prefix, or NULL. */
const char *lvm_lv_tag_value(const struct lvm_lv *lv, const char *prefix);

#endif
