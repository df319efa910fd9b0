/* pve_names: Proxmox's volume and snapshot names; see pve_names.h. */
#include "store/pve_names.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

/* LVM's limit on an LV name (lvm/lvm.h LVM_LV_NAME_MAX). */
#define LV_NAME_MAX 127

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

int pve_volume_vmid(const char *name)
{
	const char *p = !strncmp(name, "vm-", 3) ? name + 3 : !strncmp(name, "base-", 5) ? name + 5 : NULL;
	const char *q;
	int vmid = 0;

	if (!p || !isdigit((unsigned char)*p))
		return -1;
	for (q = p; isdigit((unsigned char)*q) && q - p < PVE_VMID_DIGITS_MAX; q++)
		vmid = vmid * 10 + (*q - '0');
	if (*q != '-' || !q[1])
		return -1;
	for (const char *c = q + 1; *c; c++)
		if (isspace((unsigned char)*c) || *c == '/')
			return -1;
	return vmid;
}

enum pve_vol_suffix pve_volume_suffix(const char *name)
{
	return ends_with(name, ".qcow2")  ? PVE_SUFFIX_QCOW2
	       : ends_with(name, ".raw")    ? PVE_SUFFIX_RAW
	       : ends_with(name, ".vmdk")   ? PVE_SUFFIX_VMDK
	       : ends_with(name, ".subvol") ? PVE_SUFFIX_SUBVOL
					    : PVE_SUFFIX_NONE;
}

bool pve_volume_is_state(const char *name, int vmid)
{
	char state[32];

	snprintf(state, sizeof(state), "vm-%d-state-", vmid);
	return vmid >= 0 && !strncmp(name, state, strlen(state));
}

int pve_snapshot_lv_name(const char *volume, const char *snap, char *out, size_t outlen)
{
	size_t base = strlen(volume);
	int n;

	if (ends_with(volume, ".qcow2"))
		base -= 6;
	n = snprintf(out, outlen, "snap_%.*s_%s.qcow2", (int)base, volume, snap);
	return n < 0 || (size_t)n >= outlen || n > LV_NAME_MAX ? -EINVAL : 0;
}

int pve_snapshot_file_name(const char *volume, const char *snap, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "snap-%s-%s", snap, volume);

	return n < 0 || (size_t)n >= outlen || n > NAME_MAX ? -EINVAL : 0;
}

char *pve_snapshot_of(const char *name, const char *vol)
{
	size_t n = strlen(name), vlen = strlen(vol), base = vlen - (ends_with(vol, ".qcow2") ? 6 : 0);
	char *snap = NULL;

	if (!strncmp(name, "snap_", 5) && n > 5 + base + 1 + 6 && !strncmp(name + 5, vol, base) &&
	    name[5 + base] == '_' && ends_with(name, ".qcow2"))
		snap = strndup(name + 6 + base, n - 6 - base - 6);
	else if (!strncmp(name, "snap-", 5) && n > 5 + 1 + vlen && ends_with(name, vol) &&
		 name[n - vlen - 1] == '-')
		snap = strndup(name + 5, n - 5 - vlen - 1);
	if (snap && !store_view_name_ok(snap)) {
		free(snap);
		snap = NULL;
	}
	return snap;
}

bool pve_is_snapshot_name(const char *name)
{
	return !strncmp(name, "snap_", 5) || !strncmp(name, "snap-", 5);
}
