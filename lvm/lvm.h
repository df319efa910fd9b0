/*
 * lvm: the LVM volume store. Discovers VGs and LVs through lvm2's own
 * reports (lvs/pvs/vgs, JSON, parsed with json-c), and serves LV bytes as
 * layer_io objects: through /dev/<vg>/<lv> when that device node exists
 * (device-mapper present, LV active), otherwise straight from the PV
 * extents lvm2 reports (linear LVs, any number of segments and PVs).
 *
 * lvm2 commands always run from an argument vector, never a shell. Without
 * device-mapper (/dev/mapper/control missing) they get --driverloaded n.
 *
 * A struct lvm_vg is an immutable snapshot of one VG taken by one scan;
 * readers hold references, a rescan makes a new one.
 */
#ifndef VSTORFS_LVM_H
#define VSTORFS_LVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../chain/chain.h"
#include "../chain/layer_io.h"

/* The longest LV name lvm2 accepts. */
#define LVM_LV_NAME_MAX 127

struct lvm_shell;

struct lvm_opts {
	/* Devices lvm2 may scan (passed as --devices), NULL-terminated; NULL = all. */
	char **devices;
	/* The store's lvm2 shell (lvm_shell.h), used under its op lock; NULL:
	 * the shell of no store (listing VGs, tools). */
	struct lvm_shell *shell;
};

struct lvm_pv {
	char *path;        /* "/dev/loop3" */
	uint64_t pe_start; /* byte offset of the first extent */
	int fd;            /* opened O_RDONLY|O_CLOEXEC at scan time, -1 if it failed */
};

struct lvm_segment {
	uint64_t lv_off;   /* byte offset inside the LV */
	uint64_t len;      /* bytes */
	int pv;            /* index into vg->pvs */
	uint64_t pv_off;   /* byte offset inside the PV device (pe_start included) */
};

struct lvm_lv {
	char *name;
	char *uuid;
	char **tags;       /* NULL-terminated */
	uint64_t size;     /* bytes */
	int64_t ctime;     /* lv_time, seconds since epoch */
	bool readable;     /* false if some segment is not linear or a PV is missing */
	int nsegs;
	struct lvm_segment *segs;
};

struct lvm_vg {
	char *name;
	char *uuid;
	uint64_t seqno;
	uint64_t extent_size;
	uint64_t size, free_bytes; /* vg_size, vg_free (statfs); 0 if lvm2 did not say */
	char *lock_type;   /* vg_lock_type: "" or "sanlock"/"dlm" (lvmlockd) */
	int npvs;
	struct lvm_pv *pvs;
	int nlvs;
	struct lvm_lv *lvs;
	/* private: reference count, atomic */
	int refs;
};

/* Names of all VGs lvm2 sees (for source "all"). *names is NULL-terminated, free with lvm_free_names. */
int lvm_list_vgs(const struct lvm_opts *o, char ***names);
void lvm_free_names(char **names);

/* The VG's metadata sequence number, for cheap change detection. -ENOENT if the VG is gone. */
int lvm_vg_seqno(const struct lvm_opts *o, const char *vg, uint64_t *seqno);

/* Scan one VG: PVs, LVs, tags, segments. -ENOENT if no such VG. */
int lvm_vg_scan(const struct lvm_opts *o, const char *vg, struct lvm_vg **out);
void lvm_vg_get(struct lvm_vg *vg);
void lvm_vg_put(struct lvm_vg *vg);

const struct lvm_lv *lvm_vg_find_lv(const struct lvm_vg *vg, const char *name);
bool lvm_lv_has_tag(const struct lvm_lv *lv, const char *tag);

/*
 * Open an LV's bytes. The layer_io holds a reference on vg. io->name is
 * "<vg>/<lv>", io->id the LV UUID, io->ctime the LV creation time.
 * -EIO (logged) if the LV is not readable (non-linear, missing PV).
 */
int lvm_lv_open(struct lvm_vg *vg, const struct lvm_lv *lv, struct layer_io **out);

/* The LV a backing string names inside VG `vgname` (the bare name Proxmox
 * writes, or /dev/<vg>/<lv>), pointing into `backing`; NULL for anything else. */
const char *lvm_backing_lv_name(const char *vgname, const char *backing);

/*
 * A chain_store resolving backing strings inside vg: a bare LV name
 * ("snap_vm-100-disk-0_s1.qcow2") or "/dev/<vg>/<lv>" of this same VG.
 * Anything else (other VG, relative paths with '/', "..") is -EACCES.
 * The store holds a reference on vg until lvm_store_release.
 */
void lvm_store_init(struct chain_store *st, struct lvm_vg *vg);
void lvm_store_release(struct chain_store *st);

/* ---- Proxmox VE naming on LVM (pve_names.c) ---- */

enum pve_format { PVE_FMT_RAW, PVE_FMT_QCOW2 };

struct pve_snapshot {
	char *name;                 /* "before-upgrade" */
	const struct lvm_lv *lv;    /* "snap_vm-100-disk-0_before-upgrade.qcow2" */
};

struct pve_volume {
	const struct lvm_lv *lv;    /* "vm-100-disk-0.qcow2" */
	enum pve_format format;
	int vmid;
	int nsnaps;
	struct pve_snapshot *snaps; /* sorted by LV creation time, oldest first */
};

struct pve_catalog {
	struct lvm_vg *vg;          /* reference held */
	int nvols;
	struct pve_volume *vols;    /* sorted by name */
};

/* Group a VG's LVs into volumes and their snapshots (del-* and non-volume LVs ignored). */
int pve_catalog_build(struct lvm_vg *vg, struct pve_catalog **out);
void pve_catalog_free(struct pve_catalog *cat);
const struct pve_volume *pve_catalog_find(const struct pve_catalog *cat, const char *volume);

/* "vm-100-disk-0.qcow2" + "s1" -> "snap_vm-100-disk-0_s1.qcow2". -EINVAL if it does not fit. */
int pve_snapshot_lv_name(const char *volume, const char *snap, char *out, size_t outlen);

#endif
