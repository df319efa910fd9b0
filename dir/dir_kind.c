/* dir_kind: the directory store as the registry sees it: an absolute path. */
#include "dir/dir_store.h"

static bool is_absolute(const char *word)
{
	return word[0] == '/';
}

const struct store_kind dir_store_kind = {
	.name = "dir",
	.matches = is_absolute,
	.open = dir_store_open,
	.source_usage = "          absolute directory paths\n",
	.usage = "",
};
