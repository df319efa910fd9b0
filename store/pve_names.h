/*
 * pve_names: Proxmox VE's names of volumes and snapshots, for every store
 * that holds Proxmox disks (lvm/ and dir/). The rules are pve-storage's:
 *
 *   volume    vm-<vmid>-<name>, base-<vmid>-<name>, <name> without blanks
 *             (LVMPlugin parse_volname ^((vm|base)-(\d+)-\S+)$; Plugin
 *             parse_name_dir adds the format suffix .raw/.qcow2/.vmdk/.subvol)
 *   state     vm-<vmid>-state-<snap>: saved RAM, not a disk
 *   snapshot  on LVM:  snap_<volume without .qcow2>_<snap>.qcow2   (PVE 9)
 *                      snap-<snap>-<volume>                        (older)
 *             in a directory with snapshot-as-volume-chain:
 *                      snap-<snap>-<volume>
 *   new snapshot names (mkdir): ^[A-Za-z][A-Za-z0-9_-]+$, at most 40
 *             characters, not "current" (store_snapshot_name_valid)
 *
 * Snapshot names may contain '_' and '-', so a snapshot's name is only ever
 * matched against the names of volumes that exist (pve_snapshot_of), longest
 * volume first. Existing snapshots are read whatever their name, as
 * Proxmox lists them; the naming rule is for new names only.
 */
#ifndef VSTORFS_PVE_NAMES_H
#define VSTORFS_PVE_NAMES_H

#include <stdbool.h>
#include <stddef.h>

/* Longest vmid taken (digits): Proxmox's are below 10^9. */
#define PVE_VMID_DIGITS_MAX 9

enum pve_vol_suffix { PVE_SUFFIX_NONE, PVE_SUFFIX_RAW, PVE_SUFFIX_QCOW2, PVE_SUFFIX_VMDK, PVE_SUFFIX_SUBVOL };

/* vm-<vmid>-<rest> or base-<vmid>-<rest>, no blank or '/': the vmid, else -1. */
int pve_volume_vmid(const char *name);
/* The format a volume's name says (.raw, .qcow2, .vmdk, .subvol). */
enum pve_vol_suffix pve_volume_suffix(const char *name);
/* vm-<vmid>-state-*: a VM's saved RAM, not one of its disks. */
bool pve_volume_is_state(const char *name, int vmid);
/* "vm-100-disk-0.qcow2" + "s1" -> "snap_vm-100-disk-0_s1.qcow2" (an LV
 * name, so at most 127 bytes). -EINVAL if it does not fit. */
int pve_snapshot_lv_name(const char *volume, const char *snap, char *out, size_t outlen);
/* "vm-100-disk-0.qcow2" + "s1" -> "snap-s1-vm-100-disk-0.qcow2" (a file
 * in a directory storage). -EINVAL if it does not fit. */
int pve_snapshot_file_name(const char *volume, const char *snap, char *out, size_t outlen);
/* Is name (either snapshot form) a snapshot of volume vol? Its snapshot
 * name (malloc'd), else NULL; also NULL when the name could not be a
 * view (store_view_name_ok). */
char *pve_snapshot_of(const char *name, const char *vol);
/* Starts with a snapshot prefix ("snap_" or "snap-"): not a volume itself. */
bool pve_is_snapshot_name(const char *name);

#endif
