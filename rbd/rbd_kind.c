/* rbd_kind: the RBD store as the registry sees it: rbd:POOL[/NAMESPACE] and the ceph_*= options. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbd/rbd.h"
#include "store/store_registry.h"

const struct rbd_opts *rbd_opts_of(const struct store_config *cfg)
{
	static const struct rbd_opts defaults;
	const struct rbd_opts *o = store_registry_opts(cfg, &rbd_store_kind);

	return o ? o : &defaults;
}

static void rbd_options_free(void *opts)
{
	struct rbd_opts *o = opts;

	free(o->conf);
	free(o->id);
	free(o->keyring);
	free(o->mon_host);
	free(o);
}

/* The field of struct rbd_opts an option sets, by its name. */
static const struct { const char *name; size_t off; } fields[] = {
	{ "ceph_conf=", offsetof(struct rbd_opts, conf) },
	{ "ceph_id=", offsetof(struct rbd_opts, id) },
	{ "ceph_keyring=", offsetof(struct rbd_opts, keyring) },
	/* Monitors as storage.cfg's monhost gives them ("a;b"): librados wants "a,b". */
	{ "ceph_mon_host=", offsetof(struct rbd_opts, mon_host) },
};

static int set(void **opts, size_t off, const char *val)
{
	struct rbd_opts *o = *opts ? *opts : (*opts = calloc(1, sizeof(*o)));
	char **field;

	if (!o)
		goto oom;
	field = (char **)((char *)o + off);
	free(*field);
	if (!(*field = strdup(val)))
		goto oom;
	if (off == offsetof(struct rbd_opts, mon_host))
		for (char *p = *field; *p; p++)
			if (*p == ';')
				*p = ',';
	return STORE_OPT_TAKEN;
oom:
	fprintf(stderr, "vstorfs: out of memory\n");
	return -1;
}

static int rbd_option(void **opts, const char *opt, bool more)
{
	(void)more;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (!strncmp(opt, fields[i].name, strlen(fields[i].name)))
			return set(opts, fields[i].off, opt + strlen(fields[i].name));
	return STORE_OPT_NOT_MINE;
}

static void *rbd_options_dup(const void *opts)
{
	const struct rbd_opts *o = opts;
	struct rbd_opts *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	if ((o->conf && !(c->conf = strdup(o->conf))) || (o->id && !(c->id = strdup(o->id))) ||
	    (o->keyring && !(c->keyring = strdup(o->keyring))) ||
	    (o->mon_host && !(c->mon_host = strdup(o->mon_host)))) {
		rbd_options_free(c);
		return NULL;
	}
	return c;
}

const struct store_kind rbd_store_kind = {
	.name = "rbd",
	.prefix = "rbd:",
	.open = rbd_store_open,
	.option = rbd_option,
	.options_dup = rbd_options_dup,
	.options_free = rbd_options_free,
	.source_usage = "          rbd:POOL[/NAMESPACE]\n",
	.usage = "  ceph_conf=PATH        rbd: the Ceph configuration (default /etc/ceph/ceph.conf)\n"
		 "  ceph_id=NAME          rbd: the Ceph user (default admin)\n"
		 "  ceph_keyring=PATH     rbd: its keyring\n"
		 "  ceph_mon_host=A[;B..] rbd: the monitors (default: what the configuration says)\n",
};
