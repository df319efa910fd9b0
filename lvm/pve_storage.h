/*
 * pve_storage: what Proxmox VE's storage configuration says about a VG, and
 * the lock Proxmox itself takes around snapshot operations on it.
 *
 * Proxmox serialises every LVM metadata change of a storage with flock(2)
 * on /var/lock/pve-manager/pve-storage-<storeid> (cluster_lock_storage for
 * non-shared storages). vstorfs takes the same lock, so its snapshot steps
 * never interleave with Proxmox's own. A VG that no storage names gets a
 * lock of vstorfs's own, one per VG.
 */
#ifndef VSTORFS_PVE_STORAGE_H
#define VSTORFS_PVE_STORAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "store/pve_config.h"

#define PVE_STORAGE_CFG PVE_CONFIG_PATH

struct pve_storage {
	char storeid[128];  /* "" when no lvm storage names the VG */
	bool shared;        /* "shared 1": the cluster-wide lock is Proxmox's */
};

/* Look vg up in the storage config at path. A missing file is "no storage" (0). */
int pve_storage_find(const char *path, const char *vg, struct pve_storage *out);

/*
 * Take the operation lock for vg (blocking up to timeout_s seconds).
 * Returns an fd to pass to pve_storage_unlock, or -EBUSY on timeout, or
 * another negative errno.
 */
int pve_storage_lock(const char *vg, const struct pve_storage *st, int timeout_s);
void pve_storage_unlock(int fd);

#endif
