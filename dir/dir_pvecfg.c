/*
 * What Proxmox's storage.cfg says about a directory: the storage whose
 * "path" is this directory (dir, nfs, cifs, cephfs, glusterfs, btrfs
 * sections), whether it is shared, whether snapshots are volume chains
 * ("snapshot-as-volume-chain 1") and how new images are preallocated.
 */
#include "dir/dir_store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "store/store.h"

static bool same_path(const char *a, const char *b)
{
	size_t n, m;

	if (!a || !b)
		return false;
	n = strlen(a);
	m = strlen(b);
	while (n > 1 && a[n - 1] == '/')
		n--;
	while (m > 1 && b[m - 1] == '/')
		m--;
	return n == m && !strncmp(a, b, n);
}

struct sect {
	struct dir_pve_cfg c;
	char path[1024];
};

static bool network_type(const char *t)
{
	return !strcmp(t, "nfs") || !strcmp(t, "cifs") || !strcmp(t, "cephfs") ||
	       !strcmp(t, "glusterfs");
}

int dir_pve_cfg_find(const char *cfgpath, const char *path, const char *realpath,
		     struct dir_pve_cfg *out)
{
	FILE *f = fopen(cfgpath, "re");
	struct sect s;
	char line[2048];
	bool in = false;

	memset(out, 0, sizeof(*out));
	memset(&s, 0, sizeof(s));
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	for (;;) {
		bool eof = !fgets(line, sizeof(line), f);

		if (eof || (line[0] && line[0] != ' ' && line[0] != '\t' && line[0] != '#' &&
			    line[0] != '\n' && line[0] != '\r')) {
			if (in && s.c.storeid[0] && (same_path(s.path, path) || same_path(s.path, realpath))) {
				*out = s.c;
				if (network_type(out->type))
					out->shared = true;
				break;
			}
			if (eof)
				break;
			memset(&s, 0, sizeof(s));
			in = false;
			char *colon = strchr(line, ':');

			if (colon) {
				*colon = 0;
				snprintf(s.c.type, sizeof(s.c.type), "%s", store_trim(line));
				snprintf(s.c.storeid, sizeof(s.c.storeid), "%s", store_trim(colon + 1));
				in = true;
			}
		} else if (in && (line[0] == ' ' || line[0] == '\t')) {
			char *key = store_trim(line), *val = key;

			while (*val && *val != ' ' && *val != '\t')
				val++;
			if (*val)
				*val++ = 0;
			val = store_trim(val);
			if (!strcmp(key, "path"))
				snprintf(s.path, sizeof(s.path), "%s", val);
			else if (!strcmp(key, "shared"))
				s.c.shared = !strcmp(val, "1");
			else if (!strcmp(key, "snapshot-as-volume-chain"))
				s.c.volume_chain = !strcmp(val, "1");
			else if (!strcmp(key, "preallocation"))
				snprintf(s.c.preallocation, sizeof(s.c.preallocation), "%s", val);
		}
	}
	fclose(f);
	return 0;
}
