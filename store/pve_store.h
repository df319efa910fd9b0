/*
 * pve_store: every store of a mount is served through a thin wrapper that
 * applies Proxmox's cluster rules (store/pve_cluster.h) around the store's
 * own snapshot operations and recovery, and may show it under its Proxmox
 * storage id. Reads pass straight through.
 *
 * Around mkdir/rmdir, in Proxmox's order (qm snapshot: lock_config, then
 * cluster_lock_storage inside): the VM's qemu-server flock and checks, then,
 * on a shared LVM or directory storage, the cluster storage lock; then the
 * store's own operation (which takes the node-local storage flock as
 * before). Recovery at mount runs under the cluster lock too.
 */
#ifndef VSTORFS_PVE_STORE_H
#define VSTORFS_PVE_STORE_H

#include "store/store.h"

struct pve_store_info {
	const char *name;     /* the top-level directory; NULL = the store's own name */
	const char *storeid;  /* "" / NULL: no storage.cfg section names it */
	bool shared;          /* "shared 1" (or a network type): the cluster lock applies */
	struct store_config *owned_cfg; /* freed with the store (a pve: rbd storage's settings) */
};

/* Wrap inner (taking it over, also on failure). */
int pve_store_wrap(struct store *inner, const struct pve_store_info *info, struct store **out);

/* Which storage.cfg section names this plain SOURCE token's store (lvm: a VG,
 * dir: a path, rbd: a pool). */
void pve_storage_of_source(const struct store_config *cfg, const char *kind, const char *src,
			   char *storeid, size_t len, bool *shared);

/*
 * SOURCE "pve:" / "pve:all" (every enabled storage of a supported type
 * that this node may use) or "pve:<storeid>": open the stores, each named
 * by its storage id. *out and *defs are malloc'd arrays of *n stores and
 * of what each is opened from (a string; another one is another storage).
 *
 * have == NULL: at mount (what cannot be served is logged; pve:<id> fails).
 * Else following storage.cfg while mounted: a storage for which have(arg,
 * id, def) is true is held as it is and not reopened (its *out entry is
 * NULL); what cannot be served or opened is left out silently; nothing
 * found is no error. -errno only when storage.cfg cannot be read.
 */
typedef bool (*pve_have_fn)(void *arg, const char *id, const char *def);
int pve_source_open(const char *spec, const struct store_config *cfg, pve_have_fn have, void *arg,
		    struct store ***out, char ***defs, int *n);
/* storage.cfg's path (cfg->pve_storage_cfg or Proxmox's own). */
const char *pve_source_cfg_path(const struct store_config *cfg);

#endif
