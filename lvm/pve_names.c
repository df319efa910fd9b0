/*
 * pve_names: Proxmox VE 9's naming on LVM (pve-storage LVMPlugin.pm).
 *
 *   volume    vm-<vmid>-<name>[.qcow2], base-<vmid>-<name>[.qcow2]
 *             (parse_volname: ^((vm|base)-(\d+)-\S+)$, qcow2 iff ".qcow2")
 *   snapshot  snap_<volume without .qcow2>_<snap>.qcow2      (PVE 9)
 *             snap-<snap>-<volume>                            (older naming)
 *
 * Snapshot names may contain '_' and '-', so a snapshot LV is only ever
 * matched against the names of volumes that exist, longest volume first.
 *
 * Reading takes the snapshot name as Proxmox does (parse_snap_name: the
 * whole "(.*)", whatever it holds), so every snapshot Proxmox lists has a
 * view; Proxmox's naming rule (pve_snapshot_name_valid) is for new names
 * only, mkdir's business.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lvm/lvm.h"
#include "store/store.h"

bool pve_snapshot_name_valid(const char *s)
{
	return store_snapshot_name_valid(s);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

/* Volume name -> vmid, or -1 if the LV is not a Proxmox volume. */
static int volume_vmid(const char *name)
{
	const char *p;
	char *end;
	long id;

	if (!strncmp(name, "vm-", 3))
		p = name + 3;
	else if (!strncmp(name, "base-", 5))
		p = name + 5;
	else
		return -1;
	if (*p < '0' || *p > '9')
		return -1;
	id = strtol(p, &end, 10);
	if (*end != '-' || !end[1] || id > 999999999)
		return -1;
	for (const char *c = end + 1; *c; c++)
		if (*c == ' ' || *c == '\t' || *c == '/')
			return -1;
	return (int)id;
}

int pve_snapshot_lv_name(const char *volume, const char *snap, char *out, size_t outlen)
{
	size_t base = strlen(volume);
	int n;

	if (ends_with(volume, ".qcow2"))
		base -= 6;
	n = snprintf(out, outlen, "snap_%.*s_%s.qcow2", (int)base, volume, snap);
	return n < 0 || (size_t)n >= outlen || n > LVM_LV_NAME_MAX ? -EINVAL : 0;
}

/* If lv is a snapshot layer of volume vol, the snapshot name (malloc'd). */
static char *snapshot_of(const char *lv, const char *vol)
{
	size_t n = strlen(lv), vlen = strlen(vol), base = vlen - (ends_with(vol, ".qcow2") ? 6 : 0);
	char *snap = NULL;

	if (!strncmp(lv, "snap_", 5) && n > 5 + base + 1 + 6 && !strncmp(lv + 5, vol, base) &&
	    lv[5 + base] == '_' && ends_with(lv, ".qcow2"))
		snap = strndup(lv + 6 + base, n - 6 - base - 6);
	else if (!strncmp(lv, "snap-", 5) && n > 5 + 1 + vlen && ends_with(lv, vol) &&
		 lv[n - vlen - 1] == '-')
		snap = strndup(lv + 5, n - 5 - vlen - 1);
	if (snap && !store_view_name_ok(snap)) {
		free(snap);
		snap = NULL;
	}
	return snap;
}

static int vol_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pve_volume *)a)->lv->name, ((const struct pve_volume *)b)->lv->name);
}

static int snap_cmp(const void *a, const void *b)
{
	const struct pve_snapshot *x = a, *y = b;

	if (x->lv->ctime != y->lv->ctime)
		return x->lv->ctime < y->lv->ctime ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Attach snapshot LV lv to the longest-named volume it matches. */
static int attach_snapshot(struct pve_catalog *cat, const struct lvm_lv *lv)
{
	struct pve_volume *best = NULL;
	char *best_snap = NULL;
	struct pve_snapshot *grown;

	for (int i = 0; i < cat->nvols; i++) {
		char *snap = snapshot_of(lv->name, cat->vols[i].lv->name);

		if (snap && (!best || strlen(cat->vols[i].lv->name) > strlen(best->lv->name))) {
			free(best_snap);
			best = &cat->vols[i];
			best_snap = snap;
		} else {
			free(snap);
		}
	}
	if (!best)
		return 0;
	grown = realloc(best->snaps, (best->nsnaps + 1) * sizeof(*grown));
	if (!grown) {
		free(best_snap);
		return -ENOMEM;
	}
	best->snaps = grown;
	best->snaps[best->nsnaps].name = best_snap;
	best->snaps[best->nsnaps].lv = lv;
	best->nsnaps++;
	return 0;
}

int pve_catalog_build(struct lvm_vg *vg, struct pve_catalog **out)
{
	struct pve_catalog *cat = calloc(1, sizeof(*cat));
	int rc = 0;

	if (!cat || !(cat->vols = calloc(vg->nlvs + 1, sizeof(*cat->vols)))) {
		free(cat);
		return -ENOMEM;
	}
	lvm_vg_get(vg);
	cat->vg = vg;
	for (int i = 0; i < vg->nlvs; i++) {
		const struct lvm_lv *lv = &vg->lvs[i];
		int vmid = volume_vmid(lv->name);

		if (vmid < 0)
			continue;
		cat->vols[cat->nvols].lv = lv;
		cat->vols[cat->nvols].vmid = vmid;
		cat->vols[cat->nvols].format = ends_with(lv->name, ".qcow2") ? PVE_FMT_QCOW2 : PVE_FMT_RAW;
		cat->nvols++;
	}
	qsort(cat->vols, cat->nvols, sizeof(*cat->vols), vol_cmp);
	for (int i = 0; i < vg->nlvs && !rc; i++)
		if (!strncmp(vg->lvs[i].name, "snap", 4))
			rc = attach_snapshot(cat, &vg->lvs[i]);
	for (int i = 0; i < cat->nvols; i++)
		if (cat->vols[i].nsnaps > 1)
			qsort(cat->vols[i].snaps, cat->vols[i].nsnaps, sizeof(struct pve_snapshot), snap_cmp);
	if (rc) {
		pve_catalog_free(cat);
		return rc;
	}
	*out = cat;
	return 0;
}

void pve_catalog_free(struct pve_catalog *cat)
{
	if (!cat)
		return;
	for (int i = 0; i < cat->nvols; i++) {
		for (int j = 0; j < cat->vols[i].nsnaps; j++)
			free(cat->vols[i].snaps[j].name);
		free(cat->vols[i].snaps);
	}
	free(cat->vols);
	lvm_vg_put(cat->vg);
	free(cat);
}

static int find_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct pve_volume *)elem)->lv->name);
}

const struct pve_volume *pve_catalog_find(const struct pve_catalog *cat, const char *volume)
{
	return bsearch(volume, cat->vols, cat->nvols, sizeof(*cat->vols), find_cmp);
}
