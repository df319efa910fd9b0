/*
 * store_registry: the kinds of store, one line each. A kind whose library
 * is not built in (make RBD=0) keeps a line that says so, so that its
 * SOURCE words fail with that reason rather than being taken for another
 * kind's (an "rbd:pool" read as a VG name).
 */
#include "store/store_registry.h"

#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "dir/dir_store.h"
#include "lvm/vg_store.h"
#if VSTORFS_RBD
#include "rbd/rbd.h"
#else
#include <stdio.h>

#define NO_RBD "vstorfs was built without Ceph RBD support (make RBD=0)"

/* Its options are refused with the reason too, not as unknown. */
static int rbd_missing_option(void **opts, const char *opt, bool more)
{
	(void)opts;
	(void)more;
	if (strncmp(opt, "ceph_", 5))
		return STORE_OPT_NOT_MINE;
	fprintf(stderr, "vstorfs: option '%s': " NO_RBD "\n", opt);
	return -1;
}

static const struct store_kind rbd_missing = {
	.name = "rbd",
	.prefix = "rbd:",
	.option = rbd_missing_option,
	.missing = NO_RBD,
};
#endif

/* Prefixed and matched kinds first: the kind taking every other word last. */
const struct store_kind *const store_kinds[] = {
#if VSTORFS_RBD
	&rbd_store_kind,
#else
	&rbd_missing,
#endif
	&dir_store_kind,
	&lvm_store_kind,
	NULL,
};
_Static_assert(sizeof(store_kinds) / sizeof(store_kinds[0]) <= STORE_KINDS_MAX + 1,
	       "more kinds than store_config.kind_opts holds");

const struct store_kind *store_registry_match(const char *word, const char **rest)
{
	for (int i = 0; store_kinds[i]; i++) {
		const struct store_kind *k = store_kinds[i];

		if (k->prefix && !strncmp(word, k->prefix, strlen(k->prefix))) {
			*rest = word + strlen(k->prefix);
			return k;
		}
		if ((k->matches && k->matches(word)) || (!k->prefix && !k->matches)) {
			*rest = word;
			return k;
		}
	}
	vlog(LOG_ERR, "%s: no kind of store serves this source", word);
	return NULL;
}

bool store_registry_claims(const char *word)
{
	const char *rest;
	const struct store_kind *k = store_registry_match(word, &rest);

	return k && (k->prefix || k->matches);
}

int store_registry_open(const char *word, const struct store_config *cfg, struct store **out)
{
	const char *rest;
	const struct store_kind *k = store_registry_match(word, &rest);

	if (!k)
		return -EINVAL;
	if (k->missing) {
		vlog(LOG_ERR, "%s: %s", word, k->missing);
		return -EOPNOTSUPP;
	}
	return k->open(rest, cfg, out);
}

/* The kind that asked for the next option (STORE_OPT_MORE), if any. */
static const struct store_kind *continuing;

void store_registry_options_reset(void)
{
	continuing = NULL;
}

static int slot(const struct store_kind *k)
{
	int i = 0;

	while (store_kinds[i] != k)
		i++;
	return i;
}

const void *store_registry_opts(const struct store_config *cfg, const struct store_kind *k)
{
	return cfg ? cfg->kind_opts[slot(k)] : NULL;
}

static int offer(const struct store_kind *k, struct store_config *cfg, const char *opt, bool more)
{
	int rc = k->option(&cfg->kind_opts[slot(k)], opt, more);

	continuing = rc == STORE_OPT_MORE ? k : NULL;
	return rc < 0 ? -1 : rc != STORE_OPT_NOT_MINE;
}

int store_registry_option(struct store_config *cfg, const char *opt)
{
	const struct store_kind *was = continuing;

	if (was && offer(was, cfg, opt, true))
		return 1;
	for (int i = 0; store_kinds[i]; i++) {
		const struct store_kind *k = store_kinds[i];
		int rc;

		if (!k->option)
			continue;
		if ((rc = offer(k, cfg, opt, false)) != 0)
			return rc;
	}
	return 0;
}

int store_registry_config_copy(struct store_config *dst, const struct store_config *src)
{
	*dst = *src;
	for (int i = 0; store_kinds[i]; i++) {
		if (!src->kind_opts[i])
			continue;
		if (!(dst->kind_opts[i] = store_kinds[i]->options_dup(src->kind_opts[i]))) {
			while (--i >= 0)
				if (dst->kind_opts[i])
					store_kinds[i]->options_free(dst->kind_opts[i]);
			return -ENOMEM;
		}
	}
	return 0;
}

void store_registry_options_free(struct store_config *cfg)
{
	for (int i = 0; store_kinds[i]; i++) {
		if (cfg->kind_opts[i])
			store_kinds[i]->options_free(cfg->kind_opts[i]);
		cfg->kind_opts[i] = NULL;
	}
}

void store_registry_usage_sources(FILE *f)
{
	for (int i = 0; store_kinds[i]; i++)
		if (!store_kinds[i]->missing && store_kinds[i]->source_usage)
			fputs(store_kinds[i]->source_usage, f);
}

void store_registry_usage_options(FILE *f)
{
	for (int i = 0; store_kinds[i]; i++) {
		const struct store_kind *k = store_kinds[i];

		if (k->missing)
			fprintf(f, "  (%s stores: %s)\n", k->name, k->missing);
		else if (k->usage)
			fputs(k->usage, f);
	}
}
