/*
 * What Proxmox's storage.cfg says about a directory: the storage whose
 * "path" is this directory (dir, nfs, cifs, cephfs, glusterfs, btrfs
 * sections), whether it is shared, whether snapshots are volume chains
 * ("snapshot-as-volume-chain 1") and how new images are preallocated.
 * The file is parsed by store/pve_config.c; this only picks the section.
 */
#include "dir/dir_store.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "store/pve_config.h"

static bool same_path(const char *a, const char *b)
{
	size_t n, m;

	if (!a || !b || !a[0] || !b[0])
		return false;
	n = strlen(a);
	m = strlen(b);
	while (n > 1 && a[n - 1] == '/')
		n--;
	while (m > 1 && b[m - 1] == '/')
		m--;
	return n == m && !strncmp(a, b, n);
}

static void fill(struct dir_pve_cfg *out, const struct pve_cfg_storage *s)
{
	snprintf(out->storeid, sizeof(out->storeid), "%s", s->id);
	snprintf(out->type, sizeof(out->type), "%s", s->type);
	out->shared = pve_cfg_shared(s);
	out->volume_chain = pve_cfg_bool(s, "snapshot-as-volume-chain", false);
	snprintf(out->preallocation, sizeof(out->preallocation), "%s", pve_cfg_str(s, "preallocation", ""));
}

int dir_pve_cfg_find(const char *cfgpath, const char *path, const char *realpath,
		     struct dir_pve_cfg *out)
{
	struct pve_config *c;
	int rc = pve_config_load(cfgpath, &c);

	memset(out, 0, sizeof(*out));
	if (rc < 0)
		return rc;
	for (int i = 0; i < c->n; i++) {
		char p[PATH_MAX];

		if (!pve_cfg_get(&c->v[i], "path") && !pve_cfg_network_type(c->v[i].type))
			continue;
		pve_cfg_path(&c->v[i], p, sizeof(p));
		if (same_path(p, path) || same_path(p, realpath)) {
			fill(out, &c->v[i]);
			break;
		}
	}
	pve_config_free(c);
	return 0;
}
