/*
 * pve_storage: map a VG to its storage id and shared flag (the "lvm"
 * sections of storage.cfg, parsed by store/pve_config.c), and take the
 * storage lock. See pve_storage.h.
 */
#include "pve_storage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "store/pve_config.h"
#include "store/store.h"

#define PVE_LOCK_DIR "/var/lock/pve-manager"
#define OWN_LOCK_DIR "/run/lock/vstorfs"

int pve_storage_find(const char *path, const char *vg, struct pve_storage *out)
{
	struct pve_config *c;
	int rc = pve_config_load(path, &c);

	memset(out, 0, sizeof(*out));
	if (rc < 0)
		return rc;
	for (int i = 0; i < c->n; i++) {
		const struct pve_cfg_storage *s = &c->v[i];

		if (!strcmp(s->type, "lvm") && !strcmp(pve_cfg_str(s, "vgname", ""), vg)) {
			snprintf(out->storeid, sizeof(out->storeid), "%s", s->id);
			out->shared = pve_cfg_bool(s, "shared", false);
			break;
		}
	}
	pve_config_free(c);
	return 0;
}

int pve_storage_lock(const char *vg, const struct pve_storage *st, int timeout_s)
{
	char path[512];
	const char *dir = st->storeid[0] ? PVE_LOCK_DIR : OWN_LOCK_DIR;

	mkdir(dir, 0755); /* as Proxmox does: the directory may not exist yet */
	if (st->storeid[0])
		snprintf(path, sizeof(path), "%s/pve-storage-%s", dir, st->storeid);
	else
		snprintf(path, sizeof(path), "%s/vg-%s.lock", dir, vg);
	return store_lock_file(path, timeout_s);
}

void pve_storage_unlock(int fd)
{
	if (fd >= 0)
		close(fd); /* closing drops the flock */
}
