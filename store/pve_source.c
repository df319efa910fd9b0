/*
 * pve_source: SOURCE "pve:", "pve:all", "pve:<storeid>" (see pve_store.h),
 * and which storage.cfg section a plain SOURCE token's store is.
 *
 * storage.cfg is parsed by store/pve_config.c, as Proxmox parses it.
 * Served types and where their disks are (pve-storage's plugins):
 *   lvm                          vgname
 *   dir                          path (must exist)
 *   nfs, cifs, cephfs, glusterfs path, default /mnt/pve/<id>, only when mounted there
 *   rbd                          pool[/namespace]; monhost, username and
 *                                /etc/pve/priv/ceph/<id>.keyring for an
 *                                external cluster, else the local one
 * Left out, all in one log line: disabled storages ("disable 1"), storages
 * whose "nodes" list lacks this node, and every other type (lvmthin,
 * zfspool, iscsi, pbs, esxi, btrfs, ...).
 *
 * Why "pve:" and not "pve": a plain "pve" is a VG name (Proxmox's default
 * VG is called pve) and keeps meaning that VG.
 */
#include "store/pve_store.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "store/pve_cluster.h"
#include "store/pve_config.h"
#include "store/store.h"
#include "store/store_registry.h"

struct sect {
	char type[32], id[128];
	char vgname[128], path[PATH_MAX], pool[128], ns[128], monhost[512], username[128], nodes[512];
	bool shared, disabled;
	bool too_long; /* a value did not fit: never served cut short */
};

static void copy(struct sect *s, char *dst, size_t len, const struct pve_cfg_storage *st, const char *key)
{
	if ((size_t)snprintf(dst, len, "%s", pve_cfg_str(st, key, "")) >= len)
		s->too_long = true;
}

/* The fields served storages need, from one storage.cfg section. */
static void sect_of(struct sect *s, const struct pve_cfg_storage *st)
{
	memset(s, 0, sizeof(*s));
	if ((size_t)snprintf(s->type, sizeof(s->type), "%s", st->type) >= sizeof(s->type) ||
	    (size_t)snprintf(s->id, sizeof(s->id), "%s", st->id) >= sizeof(s->id))
		s->too_long = true;
	copy(s, s->vgname, sizeof(s->vgname), st, "vgname");
	if (strlen(pve_cfg_path(st, s->path, sizeof(s->path))) >= sizeof(s->path) - 1)
		s->too_long = true;
	copy(s, s->pool, sizeof(s->pool), st, "pool");
	copy(s, s->ns, sizeof(s->ns), st, "namespace");
	copy(s, s->monhost, sizeof(s->monhost), st, "monhost");
	copy(s, s->username, sizeof(s->username), st, "username");
	copy(s, s->nodes, sizeof(s->nodes), st, "nodes");
	s->shared = pve_cfg_shared(st);
	s->disabled = pve_cfg_bool(st, "disable", false);
}

/* All sections of storage.cfg (store/pve_config.c parses it); a missing file is none. */
static int load(const struct store_config *cfg, struct sect **out, int *n)
{
	struct pve_config *c;
	int rc = pve_config_load(pve_source_cfg_path(cfg), &c);

	*out = NULL;
	*n = 0;
	if (rc < 0)
		return rc;
	if (c->n && !(*out = calloc((size_t)c->n, sizeof(**out)))) {
		pve_config_free(c);
		return -ENOMEM;
	}
	for (int i = 0; i < c->n; i++)
		sect_of(&(*out)[i], &c->v[i]);
	*n = c->n;
	pve_config_free(c);
	return 0;
}

static bool network_type(const char *t)
{
	return pve_cfg_network_type(t);
}

/* The registry's kind called name; NULL (logged) when this build lacks it. */
static const struct store_kind *kind_named(const char *name, const char *storeid)
{
	for (int i = 0; store_kinds[i]; i++) {
		if (strcmp(store_kinds[i]->name, name))
			continue;
		if (store_kinds[i]->missing) {
			vlog(LOG_ERR, "storage %s: %s", storeid, store_kinds[i]->missing);
			return NULL;
		}
		return store_kinds[i];
	}
	vlog(LOG_ERR, "storage %s: this vstorfs has no %s stores", storeid, name);
	return NULL;
}

static bool same_path(const char *a, const char *b)
{
	char ra[PATH_MAX], rb[PATH_MAX];

	if (!a[0] || !b[0])
		return false;
	if (realpath(a, ra) && realpath(b, rb))
		return !strcmp(ra, rb);
	return !strcmp(a, b);
}

void pve_storage_of_source(const struct store_config *cfg, const char *kind, const char *src,
			   char *storeid, size_t len, bool *shared)
{
	struct sect *v;
	int n;

	storeid[0] = 0;
	*shared = false;
	if (load(cfg, &v, &n) < 0)
		return;
	for (int i = 0; i < n && !storeid[0]; i++) {
		const struct sect *s = &v[i];
		bool hit = s->too_long ? false
			 : !strcmp(kind, "lvm") ? !strcmp(s->type, "lvm") && !strcmp(s->vgname, src)
			 : !strcmp(kind, "dir") ? s->path[0] && same_path(s->path, src)
			 : !strcmp(s->type, "rbd") && !strcmp(s->pool[0] ? s->pool : "rbd", src);

		if (hit) {
			snprintf(storeid, len, "%s", s->id);
			*shared = s->shared;
		}
	}
	free(v);
}

static bool node_allowed(const struct sect *s)
{
	char me[128], list[512];

	if (!s->nodes[0])
		return true;
	pve_node_name(me, sizeof(me));
	snprintf(list, sizeof(list), "%s", s->nodes);
	for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
		if (!strcmp(t, me))
			return true;
	return false;
}

static bool mounted(const char *path)
{
	char parent[PATH_MAX + 4];
	struct stat a, b;

	snprintf(parent, sizeof(parent), "%s/..", path);
	return stat(path, &a) == 0 && stat(parent, &b) == 0 && (a.st_dev != b.st_dev || a.st_ino == b.st_ino);
}

/* Why section s is not served here, or NULL. */
static const char *left_out(const struct sect *s)
{
	struct stat st;

	if (s->too_long)
		return "a value too long";
	if (s->disabled)
		return "disabled";
	if (!node_allowed(s))
		return "not for this node";
	if (!strcmp(s->type, "lvm"))
		return s->vgname[0] ? NULL : "no vgname";
	if (!strcmp(s->type, "rbd"))
		return NULL;
	if (!strcmp(s->type, "dir"))
		return s->path[0] && stat(s->path, &st) == 0 && S_ISDIR(st.st_mode) ? NULL : "no such directory";
	if (network_type(s->type))
		return mounted(s->path) ? NULL : "not mounted";
	return "unsupported type";
}

/* A pve: rbd storage's own ceph settings: the mount's, with the storage's
 * on top as the rbd store's options (rbd/rbd_kind.c). */
static struct store_config *rbd_cfg(const struct store_config *cfg, const struct sect *s)
{
	struct store_config *c = malloc(sizeof(*c));
	char opt[700], path[300];
	int rc = 0;

	if (!c || store_registry_config_copy(c, cfg) < 0) {
		free(c);
		return NULL;
	}
	if (s->username[0] && snprintf(opt, sizeof(opt), "ceph_id=%s", s->username) < (int)sizeof(opt))
		rc |= store_registry_option(c, opt) != 1;
	if (s->monhost[0]) {
		/* An external cluster, as pve-storage reaches it. */
		snprintf(path, sizeof(path), PVE_ETC_DIR "/priv/ceph/%s.conf", s->id);
		snprintf(opt, sizeof(opt), "ceph_conf=%s", access(path, R_OK) == 0 ? path : "/dev/null");
		rc |= store_registry_option(c, opt) != 1;
		snprintf(opt, sizeof(opt), "ceph_keyring=" PVE_ETC_DIR "/priv/ceph/%s.keyring", s->id);
		rc |= store_registry_option(c, opt) != 1;
		snprintf(opt, sizeof(opt), "ceph_mon_host=%s", s->monhost);
		rc |= store_registry_option(c, opt) != 1;
	}
	if (rc) {
		store_registry_options_free(c);
		free(c);
		return NULL;
	}
	return c;
}

static int open_sect(const struct store_config *cfg, const struct sect *s, struct store **out)
{
	struct pve_store_info info = { .name = s->id, .storeid = s->id, .shared = s->shared };
	struct store *inner = NULL;
	char spec[300];
	int rc;

	const struct store_kind *k = kind_named(!strcmp(s->type, "lvm") || !strcmp(s->type, "rbd") ? s->type : "dir", s->id);

	if (!k)
		return -EOPNOTSUPP;
	if (!strcmp(s->type, "lvm")) {
		rc = k->open(s->vgname, cfg, &inner);
	} else if (!strcmp(s->type, "rbd")) {
		if (!(info.owned_cfg = rbd_cfg(cfg, s)))
			return -ENOMEM;
		snprintf(spec, sizeof(spec), "%s%s%s", s->pool[0] ? s->pool : "rbd", s->ns[0] ? "/" : "", s->ns);
		rc = k->open(spec, info.owned_cfg, &inner);
	} else {
		rc = k->open(s->path, cfg, &inner);
	}
	if (rc < 0) {
		if (info.owned_cfg) {
			store_registry_options_free(info.owned_cfg);
			free(info.owned_cfg);
		}
		return rc;
	}
	return pve_store_wrap(inner, &info, out);
}

static void note_left_out(char *buf, size_t len, const struct sect *s, const char *why)
{
	size_t used = strlen(buf);

	snprintf(buf + used, len - used, "%s%s (%s: %s)", used ? ", " : "", s->id, s->type, why);
}

/* A storage's id and what it is opened from: a change of it replaces the store. */
static void def_of(const struct sect *s, char *buf, size_t len)
{
	snprintf(buf, len, "%s|%s|%s|%s|%s|%s|%s|%s|%d", s->id, s->type, s->vgname, s->path, s->pool,
		 s->ns, s->monhost, s->username, s->shared);
}

int pve_source_open(const char *spec, const struct store_config *cfg, pve_have_fn have, void *arg,
		    struct store ***out, char ***defs, int *n)
{
	bool all = !spec[0] || !strcmp(spec, "all");
	struct store **v = NULL;
	char **d = NULL, def[sizeof(struct sect) + 16]; /* every field, the separators, the flag */
	char skipped[4096] = "";
	struct sect *secs;
	int nsecs, rc, found = 0;

	*out = NULL;
	*defs = NULL;
	*n = 0;
	if ((rc = load(cfg, &secs, &nsecs)) < 0) {
		vlog(LOG_ERR, "pve:%s: cannot read %s: %s", spec,
		     pve_source_cfg_path(cfg), strerror(-rc));
		return rc;
	}
	for (int i = 0; i < nsecs && rc == 0; i++) {
		const char *why = left_out(&secs[i]);
		struct store *s = NULL, **g;
		char **gd;

		if (!all && strcmp(secs[i].id, spec))
			continue;
		found++;
		if (why && have)
			continue;
		if (why) {
			note_left_out(skipped, sizeof(skipped), &secs[i], why);
			if (!all) {
				vlog(LOG_ERR, "pve:%s: storage %s cannot be served here (%s: %s)", spec,
				     secs[i].id, secs[i].type, why);
				rc = -ENOENT;
			}
			continue;
		}
		def_of(&secs[i], def, sizeof(def));
		if (have && have(arg, secs[i].id, def))
			; /* held as it is: kept, not reopened */
		else if ((rc = open_sect(cfg, &secs[i], &s)) < 0) {
			if (all || have) {
				note_left_out(skipped, sizeof(skipped), &secs[i], "cannot be opened");
				rc = 0;
			}
			continue;
		}
		if ((g = realloc(v, (size_t)(*n + 1) * sizeof(*g))))
			v = g;
		if ((gd = realloc(d, (size_t)(*n + 1) * sizeof(*gd))))
			d = gd;
		if (!g || !gd || !(d[*n] = strdup(def))) {
			if (s)
				s->ops->close(s);
			rc = -ENOMEM;
			break;
		}
		v[(*n)++] = s;
	}
	if (have)
		found = 1; /* following storage.cfg: none is no error */
	if (rc == 0 && !found) {
		vlog(LOG_ERR, "pve:%s: %s", spec, all ? "storage.cfg names no storage" : "no such storage");
		rc = -ENOENT;
	}
	if (all && skipped[0])
		vlog(LOG_NOTICE, "pve: left out: %s", skipped);
	free(secs);
	if (rc < 0) {
		for (int i = 0; i < *n; i++) {
			if (v[i])
				v[i]->ops->close(v[i]);
			free(d[i]);
		}
		free(v);
		free(d);
		*n = 0;
		return rc;
	}
	*out = v;
	*defs = d;
	return 0;
}

const char *pve_source_cfg_path(const struct store_config *cfg)
{
	return cfg->pve_storage_cfg ? cfg->pve_storage_cfg : PVE_CONFIG_PATH;
}
