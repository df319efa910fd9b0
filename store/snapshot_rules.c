/*
 * snapshot_rules: the store-independent checks of mkdir and rmdir (see
 * snapshot_rules.h). Pure: no I/O, no log line (every errno here is the
 * user's own doing, and the kernel reports it).
 */
#include "snapshot_rules.h"

#include <errno.h>
#include <string.h>

int store_snapshot_check(const struct store_config *cfg, bool take, const char *snap)
{
	if (cfg && cfg->read_only)
		return -EROFS;
	if (!strcmp(snap, "current"))
		return take ? -EEXIST : -EBUSY;
	if (take && !store_snapshot_name_valid(snap))
		return -EINVAL;
	return 0;
}
