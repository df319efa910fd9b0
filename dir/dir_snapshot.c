/*
 * dir_snapshot: the directory store's snapshot entry points (mkdir/rmdir
 * of a view): take the storage lock (dir_op.c), finish an intent a crash
 * left on the volume (dir_recover.c), then hand the volume to the kind
 * of snapshot it uses: a Proxmox volume chain (dir_chain_ops.c) or qcow2
 * internal snapshots (dir_isnap_ops.c).
 */
#include "dir/dir_snapshot.h"

#include <errno.h>
#include <string.h>

static const struct dir_wpriv *vinfo(const struct store_view *v)
{
	return v->priv;
}

static int chain_busy(struct store *s, const struct store_volume *vol)
{
	int rc = 0;

	for (int i = 0; i < vol->nviews && !rc; i++)
		if (!vinfo(&vol->views[i])->is_isnap)
			rc = dir_file_busy(s, vinfo(&vol->views[i])->rel);
	return rc;
}

static bool has_chain_views(const struct store_volume *vol)
{
	for (int i = 1; i < vol->nviews; i++)
		if (!vinfo(&vol->views[i])->is_isnap)
			return true;
	return false;
}

/* Begin a writing operation on `volume`, settled (dir_op_settle): 0 with *vol, or the error. */
static int begin_on(struct dir_op *op, struct store *s, const char *volume,
		    const struct store_volume **vol)
{
	int rc = dir_op_begin(op, s, true);

	if (rc)
		return rc;
	*vol = dir_find_volume(op->l, volume);
	if (!*vol)
		return -ENOENT;
	return dir_op_settle(op, vol, volume);
}

/* ---- the store ops ---- */

int dir_snapshot_take(struct store *s, const char *volume, const char *snap,
		      const struct store_progress *prog)
{
	struct dir_op op;
	const struct store_volume *vol;
	const struct dir_vpriv *vp;
	int rc;

	(void)prog;
	if ((rc = begin_on(&op, s, volume, &vol)))
		goto out;
	vp = vol->priv;
	for (int i = 0; i < vol->nviews; i++)
		if (!strcmp(vol->views[i].name, snap)) {
			rc = -EEXIST;
			goto out;
		}
	if (vp->fmt == DIR_VFMT_RAW) {
		rc = -EOPNOTSUPP;
		goto out;
	}
	if (vp->fmt != DIR_VFMT_QCOW2) {
		rc = -EIO;
		goto out;
	}
	if ((rc = chain_busy(s, vol)))
		goto out;
	if (vp->pve && (op.pc.volume_chain || has_chain_views(vol)))
		rc = dir_chain_take(&op, vol, snap);
	else
		rc = dir_isnap_take(&op, vol, snap);
out:
	dir_op_end(&op);
	return rc;
}

int dir_snapshot_remove(struct store *s, const char *volume, const char *snap,
			const struct store_progress *prog)
{
	struct dir_op op;
	const struct store_volume *vol;
	const struct dir_vpriv *vp;
	int rc, vi;

	if ((rc = begin_on(&op, s, volume, &vol)))
		goto out;
	vp = vol->priv;
	for (vi = 1; vi < vol->nviews && strcmp(vol->views[vi].name, snap); vi++)
		;
	if (vi >= vol->nviews) {
		rc = vp->fmt == DIR_VFMT_RAW ? -EOPNOTSUPP : -ENOENT;
		goto out;
	}
	if ((rc = chain_busy(s, vol)))
		goto out;
	if (vinfo(&vol->views[vi])->is_isnap)
		rc = dir_isnap_remove(&op, vol, vi);
	else
		rc = dir_chain_remove(&op, vol, vi, prog);
out:
	dir_op_end(&op);
	return rc;
}
