/*
 * store_set: parses SOURCE into stores (see store_set.h).
 *
 * Which kind of store serves a word, and how it is opened, is the
 * registry's (store/store_registry.h); a kind this build lacks (make RBD=0)
 * is refused there with the reason.
 *
 * "all" is dynamic: every refresh asks each kind that can list (lvm2's VGs)
 * for what it sees now. So is "pve:": a
 * refresh that finds storage.cfg changed (inode, size, mtime) opens it
 * again through the same pve_source_open as the mount did; a storage whose
 * definition is unchanged keeps its store, a changed one gets a new store.
 * A store that leaves the set is closed only with the set, because
 * listings the tree still serves point into it.
 */
#include "store/store_set.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "store/pve_store.h"
#include "store/store_registry.h"

struct store_set {
	const struct store_config *cfg;
	bool all_vgs;
	struct store **stores;   /* shown, sorted by name */
	int n;
	struct store **gone;     /* left the set ("all", "pve:"), closed with it */
	int ngone;
	char **pve_specs;        /* the pve: tokens, followed in storage.cfg */
	int nspecs;
	struct { struct store *s; char *def; } *pve; /* the stores they opened */
	int npve;
	struct stat cfg_st;      /* storage.cfg when last read (st_ino 0: none) */
};

static int store_cmp(const void *a, const void *b)
{
	return strcmp((*(struct store *const *)a)->name, (*(struct store *const *)b)->name);
}

/* Every store is served through the Proxmox cluster rules (store/pve_store.h):
 * the storage of storage.cfg it is, looked up by what its kind's open took. */
static int open_one(const char *src, const struct store_config *cfg, struct store **out)
{
	struct pve_store_info info = { 0 };
	struct store *inner;
	char storeid[128];
	const char *rest;
	const struct store_kind *k = store_registry_match(src, &rest);
	int rc;

	if (!k)
		return -EINVAL;
	if ((rc = store_registry_open(src, cfg, &inner)) < 0)
		return rc;
	pve_storage_of_source(cfg, k->name, rest, storeid, sizeof(storeid), &info.shared);
	info.storeid = storeid;
	return pve_store_wrap(inner, &info, out);
}

static int add(struct store_set *set, struct store *s)
{
	struct store **grown = realloc(set->stores, (set->n + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	set->stores = grown;
	set->stores[set->n++] = s;
	qsort(set->stores, set->n, sizeof(*set->stores), store_cmp);
	return 0;
}

static void close_store(struct store *s)
{
	if (s)
		s->ops->close(s);
}

static void close_store(struct store *s);

static void cfg_stat(struct store_set *set, struct stat *st)
{
	if (stat(pve_source_cfg_path(set->cfg), st) < 0)
		memset(st, 0, sizeof(*st));
}

static int held(const struct store_set *set, const char *name)
{
	for (int i = 0; i < set->npve; i++)
		if (!strcmp(set->pve[i].s->name, name))
			return i;
	return -1;
}

static int hold(struct store_set *set, struct store *s, char *def)
{
	__typeof__(set->pve) grown = realloc(set->pve, (set->npve + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	set->pve = grown;
	set->pve[set->npve].s = s;
	set->pve[set->npve++].def = def;
	return 0;
}

/* SOURCE pve:[<storeid>|all]: every store it names, each under its storage id. */
static int add_pve(struct store_set *set, const char *spec)
{
	struct store **v;
	char **defs, *copy = strdup(spec), **grown;
	int n, rc = copy ? pve_source_open(spec, set->cfg, NULL, NULL, &v, &defs, &n) : -ENOMEM;

	if (rc == 0 && (grown = realloc(set->pve_specs, (set->nspecs + 1) * sizeof(*grown)))) {
		set->pve_specs = grown;
		set->pve_specs[set->nspecs++] = copy;
		copy = NULL;
	} else if (rc == 0) {
		rc = -ENOMEM;
	}
	free(copy);
	for (int i = 0; i < n; i++) {
		if (rc == 0 && store_set_find(set, v[i]->name)) {
			vlog(LOG_ERR, "pve:%s: two stores would both be shown as '%s': mount them separately",
			     spec, v[i]->name);
			rc = -EINVAL;
		}
		if (rc == 0 && (rc = add(set, v[i])) == 0 && (rc = hold(set, v[i], defs[i])) == 0)
			continue;
		if (store_set_find(set, v[i]->name) != v[i])
			close_store(v[i]);
		free(defs[i]);
	}
	free(v);
	free(defs);
	return rc;
}

/* pve_have_fn: this storage is held with this definition. */
static bool have_pve(void *arg, const char *id, const char *def)
{
	struct store_set *set = arg;
	int i = held(set, id);

	return i >= 0 && !strcmp(set->pve[i].def, def);
}

/* Move s out of the set into gone; false (it stays) when memory is short. */
static bool drop(struct store_set *set, struct store *s)
{
	struct store **grown = realloc(set->gone, (set->ngone + 1) * sizeof(*grown));

	if (!grown)
		return false;
	set->gone = grown;
	set->gone[set->ngone++] = s;
	for (int i = 0; i < set->n; i++)
		if (set->stores[i] == s)
			memmove(&set->stores[i], &set->stores[i + 1], (--set->n - i) * sizeof(*set->stores));
	for (int i = 0; i < set->npve; i++)
		if (set->pve[i].s == s) {
			free(set->pve[i].def);
			set->pve[i] = set->pve[--set->npve];
		}
	return true;
}

/* storage.cfg changed: open what it newly names, drop what it no longer does. */
static void refresh_pve(struct store_set *set)
{
	struct store **v[set->nspecs];
	char **defs[set->nspecs];
	int n[set->nspecs], k;

	for (k = 0; k < set->nspecs; k++)
		if (pve_source_open(set->pve_specs[k], set->cfg, have_pve, set, &v[k], &defs[k], &n[k]) < 0)
			break;
	if (k < set->nspecs) {
		/* Unreadable: nothing changes, and the next refresh reads it again. */
		memset(&set->cfg_st, 0, sizeof(set->cfg_st));
		set->cfg_st.st_nlink = (nlink_t)-1;
	}
	/* Held stores none of the specs still names as they are leave. */
	for (int i = 0; k == set->nspecs && i < set->npve; i++) {
		bool kept = false;

		for (int j = 0; j < set->nspecs && !kept; j++)
			for (int m = 0; m < n[j] && !kept; m++)
				kept = !v[j][m] && !strcmp(defs[j][m], set->pve[i].def);
		if (!kept) {
			char name[128];

			snprintf(name, sizeof(name), "%s", set->pve[i].s->name);
			if (drop(set, set->pve[i].s)) {
				vlog(LOG_NOTICE, "storage %s dropped: storage.cfg no longer serves it so", name);
				i--;
			}
		}
	}
	for (int j = 0; j < k; j++) {
		for (int m = 0; m < n[j]; m++) {
			struct store *s = v[j][m];

			if (s && k == set->nspecs && !store_set_find(set, s->name) && add(set, s) == 0) {
				if (hold(set, s, defs[j][m]) == 0) {
					vlog(LOG_NOTICE, "storage %s added", s->name);
					continue;
				}
				drop(set, s); /* or it stays shown, unfollowed: closed with the set */
				s = NULL;
			}
			if (s && k == set->nspecs && store_set_find(set, s->name) && held(set, s->name) < 0)
				vlog(LOG_ERR, "storage %s left out: another store is shown as '%s'", s->name,
				     s->name);
			close_store(s);
			free(defs[j][m]);
		}
		free(v[j]);
		free(defs[j]);
	}
}

int store_set_open(const char *source, const struct store_config *cfg, struct store_set **out)
{
	struct store_set *set = calloc(1, sizeof(*set));
	char *copy = strdup(source), *save = NULL;
	int rc = 0;

	if (!set || !copy) {
		free(set);
		free(copy);
		return -ENOMEM;
	}
	set->cfg = cfg;
	for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		struct store *s;

		if (!strcmp(tok, "all")) {
			set->all_vgs = true;
			continue;
		}
		if (!strncmp(tok, "pve:", 4)) {
			if (!set->nspecs)
				cfg_stat(set, &set->cfg_st);
			rc = add_pve(set, tok + 4);
			continue;
		}
		if ((rc = open_one(tok, cfg, &s)) < 0)
			break;
		if (store_set_find(set, s->name)) {
			vlog(LOG_ERR, "%s: two stores would both be shown as '%s': mount them separately",
			     tok, s->name);
			close_store(s);
			rc = -EINVAL;
		} else if ((rc = add(set, s)) < 0) {
			close_store(s);
		}
	}
	free(copy);
	if (rc == 0 && set->n == 0 && !set->all_vgs) {
		vlog(LOG_ERR, "empty source");
		rc = -EINVAL;
	}
	if (rc == 0 && set->all_vgs)
		rc = store_set_refresh(set) < 0 ? -EIO : 0;
	if (rc < 0) {
		store_set_close(set);
		return rc;
	}
	*out = set;
	return 0;
}

static bool in_names(char **names, const char *name)
{
	for (int i = 0; names[i]; i++)
		if (!strcmp(names[i], name))
			return true;
	return false;
}

/* "all" of one kind: its stores that left go, what it newly lists comes. */
static void refresh_all(struct store_set *set, const struct store_kind *k)
{
	char **names;

	if (k->list_all(set->cfg, &names) < 0)
		return;
	for (int i = 0; i < set->n; i++) {
		struct store **grown;

		if (strcmp(set->stores[i]->ops->kind, k->name) || in_names(names, set->stores[i]->name) ||
		    held(set, set->stores[i]->name) >= 0)
			continue;
		grown = realloc(set->gone, (set->ngone + 1) * sizeof(*grown));
		if (!grown)
			break;
		set->gone = grown;
		set->gone[set->ngone++] = set->stores[i];
		memmove(&set->stores[i], &set->stores[i + 1], (set->n - i - 1) * sizeof(*set->stores));
		set->n--;
		i--;
	}
	for (int i = 0; names[i]; i++) {
		struct store *s;
		char word[512];

		snprintf(word, sizeof(word), "%s%s", k->prefix ? k->prefix : "", names[i]);
		if (store_set_find(set, names[i]) || open_one(word, set->cfg, &s) < 0)
			continue;
		if (add(set, s) < 0)
			close_store(s);
	}
	for (int i = 0; names[i]; i++)
		free(names[i]);
	free(names);
}

int store_set_refresh(struct store_set *set)
{
	if (set->nspecs) {
		struct stat st;

		cfg_stat(set, &st);
		if (st.st_ino != set->cfg_st.st_ino || st.st_dev != set->cfg_st.st_dev ||
		    st.st_size != set->cfg_st.st_size || st.st_nlink != set->cfg_st.st_nlink ||
		    st.st_mtim.tv_sec != set->cfg_st.st_mtim.tv_sec ||
		    st.st_mtim.tv_nsec != set->cfg_st.st_mtim.tv_nsec) {
			set->cfg_st = st;
			refresh_pve(set);
		}
	}
	if (!set->all_vgs)
		return set->n;
	for (int i = 0; store_kinds[i]; i++)
		if (store_kinds[i]->list_all && !store_kinds[i]->missing)
			refresh_all(set, store_kinds[i]);
	return set->n;
}

void store_set_close(struct store_set *set)
{
	if (!set)
		return;
	for (int i = 0; i < set->n; i++)
		close_store(set->stores[i]);
	for (int i = 0; i < set->ngone; i++)
		close_store(set->gone[i]);
	for (int i = 0; i < set->nspecs; i++)
		free(set->pve_specs[i]);
	for (int i = 0; i < set->npve; i++)
		free(set->pve[i].def);
	free(set->pve_specs);
	free(set->pve);
	free(set->stores);
	free(set->gone);
	free(set);
}

int store_set_count(const struct store_set *set)
{
	return set->n;
}

struct store *store_set_at(const struct store_set *set, int i)
{
	return i >= 0 && i < set->n ? set->stores[i] : NULL;
}

struct store *store_set_find(const struct store_set *set, const char *name)
{
	for (int i = 0; i < set->n; i++)
		if (!strcmp(set->stores[i]->name, name))
			return set->stores[i];
	return NULL;
}
