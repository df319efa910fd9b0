/* rbd_kind: the RBD store as the registry sees it: rbd:POOL[/NAMESPACE] and the ceph_*= options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbd/rbd.h"

static int set(const char **field, const char *val)
{
	free((char *)*field);
	*field = strdup(val);
	if (!*field) {
		fprintf(stderr, "vstorfs: out of memory\n");
		return -1;
	}
	return STORE_OPT_TAKEN;
}

static int rbd_option(struct store_config *cfg, const char *opt, bool more)
{
	(void)more;
	if (!strncmp(opt, "ceph_conf=", 10))
		return set(&cfg->ceph_conf, opt + 10);
	if (!strncmp(opt, "ceph_id=", 8))
		return set(&cfg->ceph_id, opt + 8);
	if (!strncmp(opt, "ceph_keyring=", 13))
		return set(&cfg->ceph_keyring, opt + 13);
	return STORE_OPT_NOT_MINE;
}

static void rbd_options_free(struct store_config *cfg)
{
	free((char *)cfg->ceph_conf);
	free((char *)cfg->ceph_id);
	free((char *)cfg->ceph_keyring);
	cfg->ceph_conf = cfg->ceph_id = cfg->ceph_keyring = NULL;
}

const struct store_kind rbd_store_kind = {
	.name = "rbd",
	.prefix = "rbd:",
	.open = rbd_store_open,
	.option = rbd_option,
	.options_free = rbd_options_free,
	.source_usage = "          rbd:POOL[/NAMESPACE]\n",
	.usage = "  ceph_conf=PATH        rbd: the Ceph configuration (default /etc/ceph/ceph.conf)\n"
		 "  ceph_id=NAME          rbd: the Ceph user (default admin)\n"
		 "  ceph_keyring=PATH     rbd: its keyring\n",
};
