/* Lookups over a store listing, shared by every store and by fs/. */
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static int vol_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct store_volume *)elem)->name);
}

const struct store_volume *store_listing_find(const struct store_listing *l, const char *volume)
{
	return l->nvols ? bsearch(volume, l->vols, l->nvols, sizeof(*l->vols), vol_cmp) : NULL;
}

const struct store_view *store_volume_find_view(const struct store_volume *v, const char *name)
{
	for (int i = 0; i < v->nviews; i++)
		if (!strcmp(v->views[i].name, name))
			return &v->views[i];
	return NULL;
}
