/*
 * pve_catalog: a VG's LVs grouped as Proxmox VE 9 names them (pve-storage
 * LVMPlugin.pm): volumes and, for each, its snapshot LVs. The naming rules
 * themselves are store/pve_names.c's, shared with directory stores.
 *
 * Reading takes the snapshot name as Proxmox does (parse_snap_name: the
 * whole "(.*)", whatever it holds), so every snapshot Proxmox lists has a
 * view; Proxmox's naming rule (store_snapshot_name_valid, checked for every
 * store in store/snapshot_rules.c) is for new names only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lvm/lvm.h"
#include "store/pve_names.h"
#include "store/store.h"

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
		char *snap = pve_snapshot_of(lv->name, cat->vols[i].lv->name);

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
		int vmid = pve_volume_vmid(lv->name);

		if (vmid < 0)
			continue;
		cat->vols[cat->nvols].lv = lv;
		cat->vols[cat->nvols].vmid = vmid;
		cat->vols[cat->nvols].format = pve_volume_suffix(lv->name) == PVE_SUFFIX_QCOW2 ? PVE_FMT_QCOW2 : PVE_FMT_RAW;
		cat->nvols++;
	}
	qsort(cat->vols, cat->nvols, sizeof(*cat->vols), vol_cmp);
	for (int i = 0; i < vg->nlvs && !rc; i++)
		if (pve_is_snapshot_name(vg->lvs[i].name))
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
