/* extents_json: see extents_json.h. The builder is the engine's (chain/diff.h). */
#include "store/extents_json.h"

#include <errno.h>

#include "chain/diff.h"

int extents_json(struct view_reader *newer, struct view_reader *older, size_t max, char **out,
		 size_t *len)
{
	struct extent_json j;
	int rc;

	if (!newer->ops->changed || (older && older->ops->changed != newer->ops->changed))
		return -EOPNOTSUPP;
	extent_json_init(&j, max);
	rc = newer->ops->changed(newer, older, extent_json_add, &j);
	if (rc == 0)
		rc = extent_json_finish(&j, out, len);
	extent_json_release(&j);
	return rc > 0 ? -EIO : rc;
}
