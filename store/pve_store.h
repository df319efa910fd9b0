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
 * by its storage id. *out is a malloc'd array of *n stores.
 */
int pve_source_open(const char *spec, const struct store_config *cfg, struct store ***out, int *n);

#endif
