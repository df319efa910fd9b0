/*
 * pve_storage: parse /etc/pve/storage.cfg just enough to map a VG to its
 * storage id and shared flag, and take the storage lock. See pve_storage.h.
 *
 * storage.cfg is a list of sections: "<type>: <id>" at column 0, then
 * indented "<key> <value>" lines. Only "lvm" sections matter here.
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
#include "store/store.h"

#define PVE_LOCK_DIR "/var/lock/pve-manager"
#define OWN_LOCK_DIR "/run/lock/vstorfs"

struct section {
	bool is_lvm;
	char id[128];
	char vg[128];
	bool shared;
};

static bool section_matches(const struct section *s, const char *vg)
{
	return s->is_lvm && s->id[0] && !strcmp(s->vg, vg);
}

static void section_start(struct section *s, char *line)
{
	char *colon = strchr(line, ':');

	memset(s, 0, sizeof(*s));
	if (!colon)
		return;
	*colon = 0;
	s->is_lvm = !strcmp(store_trim(line), "lvm");
	snprintf(s->id, sizeof(s->id), "%s", store_trim(colon + 1));
}

static void section_key(struct section *s, char *line)
{
	char *key = store_trim(line), *val = key;

	while (*val && *val != ' ' && *val != '\t')
		val++;
	if (*val)
		*val++ = 0;
	val = store_trim(val);
	if (!strcmp(key, "vgname"))
		snprintf(s->vg, sizeof(s->vg), "%s", val);
	else if (!strcmp(key, "shared"))
		s->shared = !strcmp(val, "1");
}

int pve_storage_find(const char *path, const char *vg, struct pve_storage *out)
{
	FILE *f = fopen(path, "re");
	struct section s = { 0 };
	char line[1024];

	memset(out, 0, sizeof(*out));
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	for (;;) {
		bool eof = !fgets(line, sizeof(line), f);

		if (eof || (line[0] && line[0] != ' ' && line[0] != '\t' && line[0] != '#' &&
			    line[0] != '\n')) {
			if (section_matches(&s, vg)) {
				snprintf(out->storeid, sizeof(out->storeid), "%s", s.id);
				out->shared = s.shared;
				break;
			}
			if (eof)
				break;
			section_start(&s, line);
		} else if (line[0] == ' ' || line[0] == '\t') {
			section_key(&s, line);
		}
	}
	fclose(f);
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
