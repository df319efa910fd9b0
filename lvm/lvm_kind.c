/*
 * lvm_kind: the LVM store as the registry sees it (store/store_registry.h).
 * A SOURCE word no other kind takes is a VG name; "all" lists lvm2's VGs.
 *
 * devices= takes a comma-separated list inside a comma-separated option
 * string, so an option that starts with '/' right after it continues it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lvm/vg_store.h"
#include "store/store_registry.h"

struct lvm_kind_opts {
	char **devices;         /* NULL-terminated */
};

char **lvm_store_devices(const struct store_config *cfg)
{
	const struct lvm_kind_opts *o = store_registry_opts(cfg, &lvm_store_kind);

	return o ? o->devices : NULL;
}

static int devices_push(void **opts, const char *dev)
{
	struct lvm_kind_opts *o = *opts ? *opts : (*opts = calloc(1, sizeof(*o)));
	size_t n = 0;
	char **nv;

	if (!o)
		goto oom;
	while (o->devices && o->devices[n])
		n++;
	nv = realloc(o->devices, (n + 2) * sizeof(*nv));
	if (!nv)
		goto oom;
	nv[n] = strdup(dev);
	nv[n + 1] = NULL;
	o->devices = nv;
	if (!nv[n])
		goto oom;
	return STORE_OPT_MORE;
oom:
	fprintf(stderr, "vstorfs: out of memory\n");
	return -1;
}

static int lvm_option(void **opts, const char *opt, bool more)
{
	if (more && opt[0] == '/')
		return devices_push(opts, opt);
	if (strncmp(opt, "devices=", 8))
		return STORE_OPT_NOT_MINE;
	return opt[8] ? devices_push(opts, opt + 8) : STORE_OPT_MORE;
}

static void lvm_options_free(void *opts)
{
	struct lvm_kind_opts *o = opts;

	for (size_t i = 0; o->devices && o->devices[i]; i++)
		free(o->devices[i]);
	free(o->devices);
	free(o);
}

static void *lvm_options_dup(const void *opts)
{
	const struct lvm_kind_opts *o = opts;
	void *copy = NULL;

	for (size_t i = 0; o->devices && o->devices[i]; i++)
		if (devices_push(&copy, o->devices[i]) < 0) {
			if (copy)
				lvm_options_free(copy);
			return NULL;
		}
	return copy ? copy : calloc(1, sizeof(struct lvm_kind_opts));
}

const struct store_kind lvm_store_kind = {
	.name = "lvm",
	.open = lvm_store_open,
	.list_all = lvm_store_list_vgs,
	.option = lvm_option,
	.options_dup = lvm_options_dup,
	.options_free = lvm_options_free,
	.source_usage = "          volume group names or 'all' (every VG)\n",
	.usage = "  devices=DEV[,DEV...]  lvm: only let lvm2 scan these devices\n",
};
