/*
 * store_set: parses SOURCE into stores (see store_set.h).
 *
 * A store constructor that is not linked into this build (a store whose
 * library is missing) is declared weak: its source is refused with a clear
 * message instead of failing the build.
 *
 * "all" is the only dynamic source: every refresh asks lvm2 for its VGs.
 * A store that leaves the set is closed only with the set, because
 * listings the tree still serves point into it.
 */
#include "store/store_set.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "store/pve_store.h"

int lvm_store_open(const char *vg, const struct store_config *cfg, struct store **out);
int lvm_store_list_vgs(const struct store_config *cfg, char ***names);
int dir_store_open(const char *path, const struct store_config *cfg, struct store **out)
	__attribute__((weak));
int rbd_store_open(const char *spec, const struct store_config *cfg, struct store **out)
	__attribute__((weak));

struct store_set {
	const struct store_config *cfg;
	bool all_vgs;
	struct store **stores;   /* shown, sorted by name */
	int n;
	struct store **gone;     /* left the set ("all"), closed with it */
	int ngone;
};

static int store_cmp(const void *a, const void *b)
{
	return strcmp((*(struct store *const *)a)->name, (*(struct store *const *)b)->name);
}

static int open_inner(const char *src, const struct store_config *cfg, struct store **out)
{
	if (!strncmp(src, "rbd:", 4)) {
		if (!rbd_store_open) {
			vlog(LOG_ERR, "%s: this vstorfs was built without RBD support", src);
			return -EOPNOTSUPP;
		}
		return rbd_store_open(src + 4, cfg, out);
	}
	if (src[0] == '/') {
		if (!dir_store_open) {
			vlog(LOG_ERR, "%s: this vstorfs was built without directory stores", src);
			return -EOPNOTSUPP;
		}
		return dir_store_open(src, cfg, out);
	}
	return lvm_store_open(src, cfg, out);
}

/* Every store is served through the Proxmox cluster rules (store/pve_store.h). */
static int open_one(const char *src, const struct store_config *cfg, struct store **out)
{
	struct pve_store_info info = { 0 };
	struct store *inner;
	char storeid[128];
	int rc = open_inner(src, cfg, &inner);

	if (rc < 0)
		return rc;
	pve_storage_of_source(cfg, inner->ops->kind, !strcmp(inner->ops->kind, "lvm") ? inner->name :
			      !strncmp(src, "rbd:", 4) ? src + 4 : src, storeid, sizeof(storeid), &info.shared);
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

/* SOURCE pve:[<storeid>|all]: every store it names, each under its storage id. */
static int add_pve(struct store_set *set, const char *spec)
{
	struct store **v;
	int n, rc = pve_source_open(spec, set->cfg, &v, &n);

	for (int i = 0; i < n; i++) {
		if (rc == 0 && store_set_find(set, v[i]->name)) {
			vlog(LOG_ERR, "pve:%s: two stores would both be shown as '%s': mount them separately",
			     spec, v[i]->name);
			rc = -EINVAL;
		}
		if (rc < 0 || (rc = add(set, v[i])) < 0)
			close_store(v[i]);
	}
	free(v);
	return rc;
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

int store_set_refresh(struct store_set *set)
{
	char **names;

	if (!set->all_vgs)
		return set->n;
	if (lvm_store_list_vgs(set->cfg, &names) < 0)
		return set->n;
	for (int i = 0; i < set->n; i++) {
		struct store **grown;

		if (strcmp(set->stores[i]->ops->kind, "lvm") || in_names(names, set->stores[i]->name))
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

		if (store_set_find(set, names[i]) || open_one(names[i], set->cfg, &s) < 0)
			continue;
		if (add(set, s) < 0)
			close_store(s);
	}
	for (int i = 0; names[i]; i++)
		free(names[i]);
	free(names);
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
