/*
 * pve_cluster: the Proxmox VE cluster's rules for a snapshot operation, as
 * qemu-server and pve-storage apply them, so that vstorfs on one node and
 * Proxmox (or vstorfs) on another never change one storage or one VM at once.
 *
 *  - The cluster storage lock (pve-cluster Cluster.pm cfs_lock, taken by
 *    pve-storage's cluster_lock_storage for a "shared 1" storage): the
 *    directory /etc/pve/priv/lock/storage-<storeid>, taken by mkdir(2),
 *    retried once a second for 10 s with utime(0, 0) on it (pmxcfs's
 *    unlock request, which expires a lock older than 120 s), released by
 *    rmdir(2). While held, it is refreshed with utime(now) (pmxcfs's lock
 *    update request, as pve-ha-manager refreshes its locks), so pmxcfs
 *    never expires it under a long merge.
 *  - The VM: the owner node (/etc/pve/.vmlist, else the node directory
 *    holding <vmid>.conf), the config's "lock:" line, the pid file
 *    /var/run/qemu-server/<vmid>.pid naming a live process, all checked
 *    under qemu-server's own flock /var/lock/qemu-server/lock-<vmid>.conf.
 *
 * Every refusal is -EBUSY with one log line naming the storage, VM or node
 * and why; nothing has changed when it is returned.
 */
#ifndef VSTORFS_PVE_CLUSTER_H
#define VSTORFS_PVE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "store/pve_names.h"

#define PVE_ETC_DIR "/etc/pve"
#define PVE_CFS_LOCK_DIR "/etc/pve/priv/lock"
#define PVE_CFS_ACQUIRE_TIMEOUT_S 10   /* cfs_lock's default */
#define PVE_CFS_REFRESH_S 30           /* well inside pmxcfs's 120 s */
#define PVE_VM_LOCK_TIMEOUT_S 10       /* qemu-server lock_config's default */

struct pve_cfs_lock {
	char path[512];       /* /etc/pve/priv/lock/storage-<id>; "" when not held */
	char record[512];     /* this node's note of who holds it (stale-lock reports) */
	bool refreshing;
	void *refresher;      /* the refresh thread's state */
	long long taken_ns;   /* CLOCK_MONOTONIC when taken */
	char storeid[128];
};

/*
 * Take the cluster storage lock of storeid. Returns 0 (held), 1 (no
 * cluster filesystem and no_cluster_ok: nothing held, go on), or -EBUSY:
 * no cluster filesystem, no quorum, or still held by someone after the
 * acquire timeout (logged once, with the reason). A lock left by a
 * vstorfs of this node that was killed while holding it is reported and
 * taken over (never removed silently).
 */
int pve_cfs_lock_storage(const char *storeid, bool no_cluster_ok, struct pve_cfs_lock *lk);
void pve_cfs_unlock(struct pve_cfs_lock *lk);
/* Does this thread hold a cluster storage lock (the stores' shared-storage check)? */
bool pve_cfs_lock_held(void);

/*
 * For a step that changes no storage metadata (a merge's data copy into an
 * LV or a file of the VM whose lock is held): release the cluster lock this thread holds, if any (1 if it
 * did, 0 if none was held), and take it back afterwards. pve_cfs_resume
 * returns 0 (held again, or nothing was suspended) or -EBUSY (logged); the
 * caller then re-checks under the lock that the chain is what it measured.
 */
int pve_cfs_suspend(const char *why);
int pve_cfs_resume(void);

/* Is the volume an LV name belongs to (vstorfs-new-<vol>, snap_<vol>_<snap>.qcow2,
 * snap-<snap>-<vol>, <vol>) a VM's that another node owns? Logged when so. */
bool pve_lv_owned_elsewhere(const char *store, const char *lvname);

/* This node's name: gethostname up to the first dot. */
void pve_node_name(char *buf, size_t len);
/* pve_volume_vmid, the VM a volume name belongs to: store/pve_names.h. */

/*
 * Before a snapshot operation on `volume` of store `store`: take the VM's
 * qemu-server flock and refuse (-EBUSY, logged) a VM owned by another node,
 * a running VM, or one whose config carries a "lock:" line. *fd is the
 * lock to pass to pve_vm_guard_end (-1 when the volume is no VM's or this
 * is no Proxmox node).
 */
int pve_vm_guard_begin(const char *store, const char *volume, int *fd);
void pve_vm_guard_end(int fd);

#endif
