/*
 * dir_probe: what every part of the directory store asks of one file: its
 * format and backing (resolved against the store's root), the chain of
 * readers behind it, a Proxmox snapshot layer's name, and a log line said
 * once per cause. It depends on no other part of dir/ but file_io and
 * dir_backing, so layouts, the listing and the snapshot operations can all
 * use it without depending on each other.
 */
#include "dir/dir_store.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/log_cause.h"

void dir_log_once(struct store *s, const char *key, int prio, const char *fmt, ...)
{
	struct dir_store_priv *p = s->priv;
	va_list ap;
	char **v;

	pthread_mutex_lock(&p->log_lock);
	for (int i = 0; i < p->nlogged; i++)
		if (!strcmp(p->logged[i], key)) {
			pthread_mutex_unlock(&p->log_lock);
			return;
		}
	v = p->nlogged < 100000 ? realloc(p->logged, (size_t)(p->nlogged + 1) * sizeof(*v)) : NULL;
	if (v) {
		p->logged = v;
		if ((v[p->nlogged] = strdup(key)))
			p->nlogged++;
	}
	pthread_mutex_unlock(&p->log_lock);
	{
		char msg[1024];

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		vlog(prio, "%s", msg);
	}
}

int dir_probe_backing(struct store *s, const char *rel, char **backing_rel, char **backing_raw,
		      enum chain_layer_format *fmt, uint64_t *vsize)
{
	struct dir_store_priv *p = s->priv;
	struct layer_io *io;
	struct chain_probe pr;
	int rc;

	*backing_rel = NULL;
	if (backing_raw)
		*backing_raw = NULL;
	*fmt = CHAIN_FMT_BAD;
	*vsize = 0;
	rc = file_io_open(p->rootfd, s->name, rel, false, &io);
	if (rc)
		return rc;
	rc = chain_probe_layer(io, &pr);
	layer_close(io);
	if (rc)
		return rc;
	*fmt = pr.format;
	*vsize = pr.virtual_size;
	if (pr.format == CHAIN_FMT_QCOW2 && pr.backing) {
		if (dir_backing_resolve(&p->backing, rel, pr.backing, backing_rel))
			*backing_rel = NULL;
		if (backing_raw) {
			*backing_raw = pr.backing;
			pr.backing = NULL;
		}
	}
	chain_probe_release(&pr);
	return 0;
}

int dir_open_chain(struct store *s, const char *rel, const char *snap,
		   enum chain_layer_format fmt, struct chain **out)
{
	struct dir_store_priv *p = s->priv;
	struct layer_io *io;
	char label[1200], subject[1300];
	int rc = file_io_open(p->rootfd, s->name, rel, false, &io);

	*out = NULL;
	snprintf(label, sizeof(label), "%s/%s%s%s", s->name, rel, snap ? "@" : "", snap ? snap : "");
	snprintf(subject, sizeof(subject), "open:%s", label);
	if (rc) {
		/* Each open(2) of a dead view comes here: one line per cause. */
		if (log_cause_new(subject, strerror(-rc)))
			vlog(LOG_ERR, "%s/%s: cannot open: %s", s->name, rel,
			     rc == -EINVAL ? "not a regular file" : strerror(-rc));
		return -EIO;
	}
	log_cause_clear(subject);
	file_io_set_gate(io, p->gates);
	if (snap) {
		rc = chain_open_snapshot(io, fmt, &p->cs, snap, label, out);
		return rc == -ENOENT ? -EIO : rc;
	}
	return chain_open(io, fmt, &p->cs, label, out);
}
