/*
 * dir_isnap_ops: mkdir/rmdir as qcow2 internal snapshots (qemu-img snapshot
 * -c / -d), for every qcow2 volume that is not a Proxmox volume chain.
 *
 * The table and refcount work is the engine's (chain/, branch isnap); this
 * file adds the intent file and recovery around it.
 */
#include "dir/dir_snapshot.h"

#include <errno.h>
#include <string.h>

#include "common/log.h"

int dir_isnap_take(struct dir_op *op, const struct store_volume *vol, const char *snap)
{
	(void)snap;
	vlog(LOG_ERR, "%s/%s: internal snapshots cannot be taken by this build", op->s->name, vol->name);
	return -EOPNOTSUPP;
}

int dir_isnap_remove(struct dir_op *op, const struct store_volume *vol, int view)
{
	(void)view;
	vlog(LOG_ERR, "%s/%s: internal snapshots cannot be removed by this build", op->s->name, vol->name);
	return -EOPNOTSUPP;
}

int dir_recover_isnap(struct store *s, const struct dir_op_paths *n, char *intent)
{
	(void)s;
	(void)n;
	(void)intent;
	return 1;
}
