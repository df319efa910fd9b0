/*
 * layouts: which files of a directory are volumes, recognised by what the
 * directory holds.
 *
 *  Proxmox (images/<vmid>/): the file names Proxmox's parse_name_dir
 *    accepts for a disk, "vm-<vmid>-<name>.{qcow2,raw}" and
 *    "base-<vmid>-<name>.{qcow2,raw}"; vmdk and subvol are left out (logged
 *    once), "vm-<vmid>-state-*" (saved RAM) is not a disk, and
 *    "snap-<snap>-<vol>" files are views of <vol>, not volumes.
 *  Nova (_base/ and <instance uuid>/disk*): "<uuid>/disk" is the volume
 *    "<uuid>_disk", "<uuid>/disk.local" is "<uuid>_disk.local", ... as Nova
 *    names the same disks on RBD; disk.info is Nova's bookkeeping, not a disk.
 *  Anything else: every qcow2 (by magic) or raw (*.raw, *.img, *.iso) file
 *    at the top of the directory that is not the backing file of another
 *    image there.
 * Hidden files (ours: intents, scratch overlays) are never volumes.
 */
#include "dir/dir_store.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "store/pve_names.h"

#define MAX_ENTRIES 4096  /* names looked at per directory */

struct names {
	int n, cap;
	char **v;
};

static void names_free(struct names *n)
{
	for (int i = 0; i < n->n; i++)
		free(n->v[i]);
	free(n->v);
	n->v = NULL;
	n->n = n->cap = 0;
}

static int cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names in directory rel (sorted), of regular files (want_dirs false) or dirs. */
static int list_dir(struct store *s, const char *rel, bool want_dirs, struct names *out)
{
	struct dir_store_priv *p = s->priv;
	int fd = dir_opendir_fd(p->rootfd, rel), seen = 0;
	struct dirent *de;
	DIR *d;

	memset(out, 0, sizeof(*out));
	if (fd < 0)
		return fd;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		struct stat st;
		bool isdir;

		if (de->d_name[0] == '.')
			continue;
		if (de->d_type == DT_DIR || de->d_type == DT_REG)
			isdir = de->d_type == DT_DIR;
		else if (de->d_type == DT_UNKNOWN || de->d_type == DT_LNK) {
			/* Follow a symlink only to see what it is; opens stay confined. */
			if (fstatat(dirfd(d), de->d_name, &st, 0))
				continue;
			if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
				continue;
			isdir = S_ISDIR(st.st_mode);
		} else
			continue;
		if (isdir != want_dirs)
			continue;
		if (++seen > MAX_ENTRIES) {
			char key[600];

			snprintf(key, sizeof(key), "toomany:%s", rel);
			dir_log_once(s, key, LOG_WARNING,
				     "%s/%s: more than %d entries: only the first %d (by name) are looked at",
				     s->name, rel, MAX_ENTRIES, MAX_ENTRIES);
		}
		if (out->n == out->cap) {
			int cap = out->cap ? out->cap * 2 : 32;
			char **v = realloc(out->v, (size_t)cap * sizeof(*v));

			if (!v)
				break;
			out->v = v;
			out->cap = cap;
		}
		if (!(out->v[out->n] = strdup(de->d_name)))
			break;
		out->n++;
	}
	closedir(d);
	if (out->n > 1)   /* qsort(NULL, 0, ...) is undefined: an empty directory is ordinary */
		qsort(out->v, (size_t)out->n, sizeof(char *), cmpstr);
	while (out->n > MAX_ENTRIES)
		free(out->v[--out->n]);
	return 0;
}

static int add_dir(struct dir_scan *sc, const char *rel)
{
	char **v = realloc(sc->dirs, (size_t)(sc->ndirs + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	sc->dirs = v;
	if (!(v[sc->ndirs] = strdup(rel)))
		return -ENOMEM;
	sc->ndirs++;
	return 0;
}

static int add_cand(struct dir_scan *sc, const char *name, const char *rel, int vmid, bool pve,
		    bool qcow2_name)
{
	struct dir_cand *v = realloc(sc->cands, (size_t)(sc->ncands + 1) * sizeof(*v));
	struct dir_cand *c;

	if (!v)
		return -ENOMEM;
	sc->cands = v;
	c = &v[sc->ncands];
	memset(c, 0, sizeof(*c));
	c->name = strdup(name);
	c->rel = strdup(rel);
	c->vmid = vmid;
	c->pve = pve;
	c->qcow2_name = qcow2_name;
	if (!c->name || !c->rel) {
		free(c->name);
		free(c->rel);
		return -ENOMEM;
	}
	sc->ncands++;
	return 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

static int scan_pve(struct store *s, struct dir_scan *sc)
{
	struct names vmids;
	int rc = list_dir(s, "images", true, &vmids);

	if (rc)
		return rc;
	if ((rc = add_dir(sc, "images")))
		goto out;
	for (int i = 0; i < vmids.n && !rc; i++) {
		char dir[300], rel[600], key[700];
		struct names files;

		if (!all_digits(vmids.v[i]))
			continue;
		snprintf(dir, sizeof(dir), "images/%s", vmids.v[i]);
		if (list_dir(s, dir, false, &files))
			continue;
		rc = add_dir(sc, dir);
		for (int j = 0; j < files.n && !rc; j++) {
			const char *f = files.v[j];
			int vmid = pve_volume_vmid(f);
			enum pve_vol_suffix sfx = pve_volume_suffix(f);
			bool q = sfx == PVE_SUFFIX_QCOW2, r = sfx == PVE_SUFFIX_RAW;

			if (pve_is_snapshot_name(f))
				continue;   /* a view of its volume */
			snprintf(key, sizeof(key), "skip:%s/%s", dir, f);
			if (vmid >= 0 && (sfx == PVE_SUFFIX_VMDK || sfx == PVE_SUFFIX_SUBVOL ||
					  !strncmp(f, "subvol-", 7))) {
				dir_log_once(s, key, LOG_INFO, "%s/%s/%s: vmdk and subvol volumes are not shown",
					     s->name, dir, f);
				continue;
			}
			if (vmid < 0 || !(q || r) || pve_volume_is_state(f, vmid))
				continue;   /* not a disk, or saved RAM */
			snprintf(rel, sizeof(rel), "%s/%s", dir, f);
			rc = add_cand(sc, f, rel, vmid, true, q);
		}
		names_free(&files);
	}
out:
	names_free(&vmids);
	return rc;
}

static bool nova_disk_name(const char *f)
{
	if (!strcmp(f, "disk"))
		return true;
	if (strncmp(f, "disk.", 5) || !f[5] || !strcmp(f, "disk.info"))
		return false;
	return true;
}

static int scan_nova(struct store *s, struct dir_scan *sc)
{
	struct names insts;
	int rc = list_dir(s, "", true, &insts);

	if (rc)
		return rc;
	for (int i = 0; i < insts.n && !rc; i++) {
		struct names files;

		if (!strcmp(insts.v[i], "_base") || !strcmp(insts.v[i], "locks") ||
		    !strcmp(insts.v[i], "snapshots"))
			continue;
		if (list_dir(s, insts.v[i], false, &files))
			continue;
		rc = add_dir(sc, insts.v[i]);
		for (int j = 0; j < files.n && !rc; j++) {
			char name[600], rel[600];

			if (!nova_disk_name(files.v[j]))
				continue;
			snprintf(name, sizeof(name), "%s_%s", insts.v[i], files.v[j]);
			snprintf(rel, sizeof(rel), "%s/%s", insts.v[i], files.v[j]);
			rc = add_cand(sc, name, rel, -1, false, false);
		}
		names_free(&files);
	}
	names_free(&insts);
	return rc;
}

static int scan_plain(struct store *s, struct dir_scan *sc)
{
	struct dir_store_priv *p = s->priv;
	struct names files;
	bool *backs;
	int rc = list_dir(s, "", false, &files);

	if (rc)
		return rc;
	backs = calloc((size_t)files.n + 1, sizeof(bool));
	if (!backs) {
		names_free(&files);
		return -ENOMEM;
	}
	/* Which files other images here name as their backing file. */
	for (int i = 0; i < files.n; i++) {
		char *brel = NULL, *braw = NULL;
		enum chain_layer_format fmt;
		uint64_t vsize;

		if (dir_probe_backing(s, files.v[i], &brel, &braw, &fmt, &vsize) == 0 && brel) {
			char **hit = bsearch(&brel, files.v, (size_t)files.n, sizeof(char *), cmpstr);

			if (hit && hit - files.v != i)  /* a file backing itself is a loop, shown broken */
				backs[hit - files.v] = true;
		}
		free(brel);
		free(braw);
	}
	for (int i = 0; i < files.n && !rc; i++) {
		const char *f = files.v[i];
		bool q = ends_with(f, ".qcow2") || ends_with(f, ".qcow");
		bool r = ends_with(f, ".raw") || ends_with(f, ".img") || ends_with(f, ".iso");
		char magic[4];
		int fd;

		if (backs[i])
			continue;
		if (!q && !r) {
			/* Any other name is a volume only when it starts with the qcow2 magic. */
			struct stat st;

			fd = dir_open_regular(p->rootfd, f, O_RDONLY, &st);
			if (fd < 0)
				continue;
			q = pread(fd, magic, 4, 0) == 4 && !memcmp(magic, "QFI\xfb", 4);
			close(fd);
			if (!q)
				continue;
		}
		rc = add_cand(sc, f, f, -1, false, ends_with(f, ".qcow2") || ends_with(f, ".qcow"));
	}
	free(backs);
	names_free(&files);
	return rc;
}

static int cmpcand(const void *a, const void *b)
{
	return strcmp(((const struct dir_cand *)a)->name, ((const struct dir_cand *)b)->name);
}

void dir_scan_release(struct dir_scan *sc)
{
	for (int i = 0; i < sc->ncands; i++) {
		free(sc->cands[i].name);
		free(sc->cands[i].rel);
	}
	free(sc->cands);
	for (int i = 0; i < sc->ndirs; i++)
		free(sc->dirs[i]);
	free(sc->dirs);
	memset(sc, 0, sizeof(*sc));
}

int dir_layout_scan(struct store *s, struct dir_scan *sc)
{
	struct dir_store_priv *p = s->priv;
	struct stat st;
	int rc, w;

	memset(sc, 0, sizeof(*sc));
	if (fstat(p->rootfd, &st) || st.st_nlink == 0)
		return -ENOENT;
	p->has_base = p->backing.has_base =
		dir_fstatat(p->rootfd, "_base", &st) == 0 && S_ISDIR(st.st_mode);
	if (dir_fstatat(p->rootfd, "images", &st) == 0 && S_ISDIR(st.st_mode))
		sc->layout = DIR_LAYOUT_PVE;
	else if (p->has_base)
		sc->layout = DIR_LAYOUT_NOVA;
	else
		sc->layout = DIR_LAYOUT_PLAIN;
	rc = add_dir(sc, "");
	if (!rc)
		rc = sc->layout == DIR_LAYOUT_PVE ? scan_pve(s, sc)
		   : sc->layout == DIR_LAYOUT_NOVA ? scan_nova(s, sc) : scan_plain(s, sc);
	if (rc) {
		dir_scan_release(sc);
		return rc;
	}
	if (sc->ncands > 1)   /* cands is NULL when nothing was found */
		qsort(sc->cands, (size_t)sc->ncands, sizeof(*sc->cands), cmpcand);
	/* One name, one volume: a second file claiming a name is left out. */
	w = 0;
	for (int i = 0; i < sc->ncands; i++) {
		if (w && !strcmp(sc->cands[w - 1].name, sc->cands[i].name)) {
			char key[700];

			snprintf(key, sizeof(key), "dup:%s", sc->cands[i].rel);
			dir_log_once(s, key, LOG_WARNING, "%s/%s: another file is already volume %s: not shown",
				     s->name, sc->cands[i].rel, sc->cands[i].name);
			free(sc->cands[i].name);
			free(sc->cands[i].rel);
			continue;
		}
		sc->cands[w++] = sc->cands[i];
	}
	sc->ncands = w;
	return 0;
}
