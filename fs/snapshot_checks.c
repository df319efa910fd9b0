/*
 * snapshot_checks: mkdir/rmdir against the published listing (see
 * snapshot_checks.h).
 */
#include "snapshot_checks.h"

#include <errno.h>

int fs_snapshot_listing_check(const struct store_listing *l, const char *volume, const char *snap,
			      bool take)
{
	const struct store_volume *v = store_listing_find(l, volume);
	const struct store_view *view;

	if (!v)
		return -ENOENT;
	view = store_volume_find_view(v, snap);
	if (take)
		return view ? -EEXIST : 0;
	return view && view->snapshot ? 0 : -ENOENT;
}
