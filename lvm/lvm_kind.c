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

static int devices_push(struct store_config *cfg, const char *dev)
{
	size_t n = 0;
	char **nv;

	while (cfg->devices && cfg->devices[n])
		n++;
	nv = realloc(cfg->devices, (n + 2) * sizeof(*nv));
	if (!nv)
		return -1;
	nv[n] = strdup(dev);
	nv[n + 1] = NULL;
	cfg->devices = nv;
	if (!nv[n]) {
		fprintf(stderr, "vstorfs: out of memory\n");
		return -1;
	}
	return STORE_OPT_MORE;
}

static int lvm_option(struct store_config *cfg, const char *opt, bool more)
{
	if (more && opt[0] == '/')
		return devices_push(cfg, opt);
	if (strncmp(opt, "devices=", 8))
		return STORE_OPT_NOT_MINE;
	return opt[8] ? devices_push(cfg, opt + 8) : STORE_OPT_MORE;
}

static void lvm_options_free(struct store_config *cfg)
{
	for (size_t i = 0; cfg->devices && cfg->devices[i]; i++)
		free(cfg->devices[i]);
	free(cfg->devices);
	cfg->devices = NULL;
}

const struct store_kind lvm_store_kind = {
	.name = "lvm",
	.open = lvm_store_open,
	.list_all = lvm_store_list_vgs,
	.option = lvm_option,
	.options_free = lvm_options_free,
	.source_usage = "          volume group names or 'all' (every VG)\n",
	.usage = "  devices=DEV[,DEV...]  lvm: only let lvm2 scan these devices\n",
};
