/*
 * store: the chain_store of one VG. A backing string may only name an LV
 * of the same VG — the bare LV name Proxmox writes, or /dev/<vg>/<lv> as
 * older versions did. Anything else is refused: a hostile image must not
 * make the daemon open paths of its choosing.
 */
#include <errno.h>
#include <string.h>

#include "lvm/lvm.h"

static bool valid_lv_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > LVM_LV_NAME_MAX || !strcmp(s, ".") || !strcmp(s, "..") || s[0] == '-')
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_.-") == n;
}

const char *lvm_backing_lv_name(const char *vgname, const char *backing)
{
	size_t n = strlen(vgname);

	if (!backing)
		return NULL;
	if (!strncmp(backing, "/dev/", 5) && !strncmp(backing + 5, vgname, n) && backing[5 + n] == '/')
		backing += 6 + n;
	return valid_lv_name(backing) ? backing : NULL;
}

static int open_backing(const struct chain_store *st, struct layer_io *from, const char *backing,
			struct layer_io **out)
{
	struct lvm_vg *vg = st->opaque;
	const char *name = lvm_backing_lv_name(vg->name, backing);
	const struct lvm_lv *lv;

	(void)from;
	if (!name)
		return -EACCES;
	lv = lvm_vg_find_lv(vg, name);
	if (!lv)
		return -ENOENT;
	return lvm_lv_open(vg, lv, out);
}

void lvm_store_init(struct chain_store *st, struct lvm_vg *vg)
{
	lvm_vg_get(vg);
	st->opaque = vg;
	st->open_backing = open_backing;
	st->kind = "volume group";
}

void lvm_store_release(struct chain_store *st)
{
	lvm_vg_put(st->opaque);
	st->opaque = NULL;
}
