/*
 * dir_layers: what a directory store remembers about its layer files, so a
 * file changed under a view ends that view honestly (README, "Reliability").
 *
 * A snapshot view's bytes never change while it exists, so the kernel keeps
 * its page cache across opens under one inode. If one of its layer files is
 * replaced (another dev:ino under the name: a rename over it) or truncated
 * (smaller than seen), the view's bytes are no longer what that cache holds.
 * So:
 *  - every scan notes each layer file's (dev, ino, size); a file that was
 *    replaced or shrank since the previous scan gets its epoch bumped, and
 *    the views built on it carry the sum of their layers' epochs in their
 *    ident ("~r<n>"): a new ident is a new inode, with no page cache, so a
 *    backup tool sees a new file. Files grow legitimately (a VM writing its
 *    top image, a merge writing into a layer): growth is no change.
 *  - our own snapshot operations rename and rewrite layers on purpose with
 *    every view's bytes kept; the scan after one takes the files as they
 *    are (rebaseline) instead of bumping epochs.
 *  - changed() re-stats the listed layers (truncation sends no inotify
 *    event we watch), and opening a snapshot view checks the opened files
 *    against the listing: between a replacement and the next scan the view
 *    reads EIO, never the new bytes under the old identity.
 * The memory lives as long as the mount: a layer replaced while unmounted
 * is not noticed (nothing on disk records what it was).
 */
#include "dir/dir_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/chain_layers.h"
#include "common/log.h"
#include "common/log_cause.h"

static struct dir_known *known_find(struct dir_store_priv *p, const char *rel)
{
	for (int i = 0; i < p->nknown; i++)
		if (!strcmp(p->known[i].rec.rel, rel))
			return &p->known[i];
	return NULL;
}

static bool replaced(uint64_t dev, uint64_t ino, uint64_t size, bool raw, const struct dir_layer_rec *was)
{
	return dev != was->dev || ino != was->ino || size < was->size || (raw && size != was->size);
}

unsigned dir_layer_note(struct store *s, struct dir_layer_list *l, const char *rel, bool raw, bool top)
{
	struct dir_store_priv *p = s->priv;
	struct dir_layer_rec rec = { .raw = raw };
	struct dir_known *k;
	struct stat st;
	void *grown;

	if (dir_fstatat(p->rootfd, rel, &st))
		return 0;
	rec.dev = (uint64_t)st.st_dev;
	rec.ino = (uint64_t)st.st_ino;
	rec.size = (uint64_t)st.st_size;
	k = known_find(p, rel);
	if (!k && (grown = realloc(p->known, (size_t)(p->nknown + 1) * sizeof(*p->known)))) {
		p->known = grown;
		k = &p->known[p->nknown];
		k->rec = rec;
		k->epoch = 0;
		if ((k->rec.rel = strdup(rel)))
			p->nknown++;
		else
			k = NULL;
	} else if (k && replaced(rec.dev, rec.ino, rec.size, raw, &k->rec)) {
		/* A volume's own top file changes with the volume (a resize);
		 * only the layers under snapshot views are worth a line. */
		if (!p->rebaseline) {
			k->epoch++;
			if (!top)
				vlog(LOG_WARNING, "%s/%s: the layer file was replaced or truncated under its "
				     "snapshot views: they now show its new bytes, as new files", s->name, rel);
		}
		k->rec.dev = rec.dev;
		k->rec.ino = rec.ino;
		k->rec.size = rec.size;
	} else if (k && rec.size > k->rec.size) {
		k->rec.size = rec.size;
	}
	if (l && (grown = realloc(l->v, (size_t)(l->n + 1) * sizeof(*l->v)))) {
		l->v = grown;
		rec.rel = strdup(rel);
		if (rec.rel)
			l->v[l->n++] = rec;
	}
	return k ? k->epoch : 0;
}

void dir_layers_scanned(struct store *s)
{
	((struct dir_store_priv *)s->priv)->rebaseline = false;
}

int dir_layers_changed(struct store *s, const struct dir_layer_list *l)
{
	struct dir_store_priv *p = s->priv;
	struct stat st;

	for (int i = 0; i < l->n; i++) {
		const struct dir_layer_rec *r = &l->v[i];

		if (dir_fstatat(p->rootfd, r->rel, &st) ||
		    replaced((uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size, r->raw, r))
			return 1;
	}
	return 0;
}

int dir_layers_check_chain(struct store *s, const struct dir_layer_list *l, struct chain *c,
			   const char *label)
{
	struct chain_layer_info li;

	for (int d = 0; chain_layer_info(c, d, &li) == 0; d++) {
		const char *rel = li.io ? file_io_rel(li.io) : NULL;
		uint64_t dev, ino;

		if (!rel || file_io_dev_ino(li.io, &dev, &ino))
			continue;
		for (int i = 0; i < l->n; i++) {
			if (strcmp(l->v[i].rel, rel) || !replaced(dev, ino, li.io->size, l->v[i].raw, &l->v[i]))
				continue;
			{
				char subject[1300];

				snprintf(subject, sizeof(subject), "changed:%s", label);
				if (log_cause_new(subject, rel))
					vlog(LOG_ERR, "%s: layer %s/%s changed since the listing: the view reads EIO "
					     "until the next rescan shows it anew", label, s->name, rel);
			}
			return -EIO;
		}
	}
	return 0;
}

void dir_layers_free(struct dir_layer_list *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->v[i].rel);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void dir_known_free(struct dir_store_priv *p)
{
	for (int i = 0; i < p->nknown; i++)
		free(p->known[i].rec.rel);
	free(p->known);
	p->known = NULL;
	p->nknown = 0;
}
