/*
 * diff: changed and allocated extents of views. See diff.h.
 *
 * A view is walked as a merge of per-layer "streams": each layer's metadata
 * is mapped in runs of one class (not answered / zeros / data / past the
 * layer's end), cached until the walk passes the run's end. At an offset the
 * topmost layer that answers decides; layers under it are not looked at, so
 * the walk costs the metadata of the layers that matter and nothing below.
 *
 * changed(newer, older):
 *  - find the longest common suffix of the two layer lists (same layer_io
 *    id, same size, same format, same active L1 table: the same bytes are
 *    reached through the same tables);
 *  - if all of older is that suffix (external snapshots), what newer's
 *    layers above it answer for is the answer;
 *  - else where no layer above the suffix answers on either side, both read
 *    the suffix at the same offset: unchanged; elsewhere both views are
 *    mapped with chain_map and compared by (layer id, host offset).
 */
#include "diff.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain_layers.h"
#include "qcow2_image.h"

enum cls { C_NONE, C_ZERO, C_DATA, C_PAST, C_BROKEN };

struct lstream {
	struct chain_layer_info li;
	uint64_t end;     /* cls holds from where it was filled up to end */
	int cls;
	bool valid;
};

struct side {
	struct lstream *s;
	int n;
};

struct emitter {
	chain_range_fn cb;
	void *arg;
	uint64_t off, len;
	bool exists, have;
};

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static int emit(struct emitter *e, uint64_t off, uint64_t len, bool exists)
{
	int rc = 0;

	if (!len)
		return 0;
	if (e->have && e->off + e->len == off && e->exists == exists) {
		e->len += len;
		return 0;
	}
	if (e->have)
		rc = e->cb(e->arg, e->off, e->len, e->exists);
	e->have = true;
	e->off = off;
	e->len = len;
	e->exists = exists;
	return rc;
}

static int emit_flush(struct emitter *e)
{
	if (!e->have)
		return 0;
	e->have = false;
	return e->cb(e->arg, e->off, e->len, e->exists);
}

/* Layers [from, from + n) of c as streams. */
static int side_open(struct side *sd, struct chain *c, int from, int n)
{
	sd->n = n;
	sd->s = calloc(n ? n : 1, sizeof(*sd->s));
	if (!sd->s)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		int rc = chain_layer_info(c, from + i, &sd->s[i].li);

		if (rc)
			return rc;
	}
	return 0;
}

static void side_close(struct side *sd)
{
	free(sd->s);
	sd->s = NULL;
}

/* The run of one class starting at pos in one layer. */
static int fill(struct lstream *s, uint64_t pos)
{
	uint64_t at = pos, stop = s->li.size;
	int cls = -1;

	s->valid = true;
	if (s->li.broken || (!s->li.img && !s->li.io)) {
		s->cls = C_BROKEN;
		s->end = UINT64_MAX;
		return 0;
	}
	if (pos >= s->li.size) {
		s->cls = C_PAST;
		s->end = UINT64_MAX;
		return 0;
	}
	if (!s->li.img) {
		s->cls = C_DATA;
		s->end = stop;
		return 0;
	}
	/* Runs of one class are joined across L2 slices and host discontinuities. */
	while (at < stop) {
		struct qcow2_run r;
		int c, rc = qcow2_image_map(s->li.img, at, stop - at, &r);

		if (!rc && !r.len)
			rc = -EIO;  /* never: a run is not empty */
		if (rc) {
			if (at > pos)
				break;  /* the next fill meets it again, if the walk gets there */
			s->valid = false;
			return rc;
		}
		c = r.kind == QCOW2_UNALLOCATED ? C_NONE : r.kind == QCOW2_ZERO ? C_ZERO : C_DATA;
		if (cls < 0)
			cls = c;
		else if (c != cls)
			break;
		at += r.len;
	}
	s->cls = cls;
	s->end = at;
	return 0;
}

/*
 * What the layers of sd say at pos: the class of the topmost one that
 * answers (C_PAST: pos is past its end, it reads zeros), C_NONE when none
 * does. *end: where that stops being true. Negative errno on failure.
 */
static int resolve(struct side *sd, uint64_t pos, uint64_t *end)
{
	uint64_t e = UINT64_MAX;

	for (int d = 0; d < sd->n; d++) {
		struct lstream *s = &sd->s[d];

		if (!s->valid || s->end <= pos) {
			int rc = fill(s, pos);

			if (rc)
				return rc;
		}
		e = min64(e, s->end);
		if (s->cls == C_BROKEN)
			return -EIO;
		if (s->cls != C_NONE) {
			*end = e;
			return s->cls;
		}
	}
	*end = e;
	return C_NONE;
}

static bool same_layer(const struct chain_layer_info *a, const struct chain_layer_info *b)
{
	const uint64_t *l1a, *l1b;
	uint32_t na, nb;

	if (a->broken || b->broken || !a->io || !b->io || strcmp(a->io->id, b->io->id) ||
	    a->size != b->size || !a->img != !b->img)
		return false;
	if (!a->img)
		return true;
	l1a = qcow2_image_l1(a->img, &na);
	l1b = qcow2_image_l1(b->img, &nb);
	return na == nb && (!na || (l1a && l1b && !memcmp(l1a, l1b, na * sizeof(*l1a))));
}

/* Layers at the bottom of both chains that are the same: 0..min depth. */
static int common_suffix(struct chain *a, struct chain *b, int *out)
{
	int na = chain_depth(a), nb = chain_depth(b), s = 0;

	while (s < na && s < nb) {
		struct chain_layer_info la, lb;
		int rc = chain_layer_info(a, na - 1 - s, &la);

		if (!rc)
			rc = chain_layer_info(b, nb - 1 - s, &lb);
		if (rc)
			return rc;
		if (!same_layer(&la, &lb))
			break;
		s++;
	}
	*out = s;
	return 0;
}

/* Every byte of c in [pos, end) as changed, data or zeros as c reads. */
static int emit_view(struct emitter *em, struct chain *c, uint64_t pos, uint64_t end)
{
	while (pos < end) {
		struct chain_extent e;
		int rc = chain_map(c, pos, end - pos, &e);

		if (!rc)
			rc = emit(em, pos, e.len, e.kind != CHAIN_EXT_ZERO);
		if (rc)
			return rc;
		pos += e.len;
	}
	return 0;
}

/* One mapped extent of a view being compared, with where it started. */
struct cursor {
	struct chain *c;
	struct chain_extent e;
	uint64_t at;
	const char *id;      /* DATA, COPY: the layer's id */
	uint64_t chost;      /* COPY: host offset of the compressed cluster */
	bool valid;
};

static int cursor_map(struct cursor *k, uint64_t pos, uint64_t end)
{
	int rc = chain_map(k->c, pos, end - pos, &k->e);

	if (rc)
		return rc;
	k->at = pos;
	k->valid = true;
	k->id = NULL;
	if (k->e.kind == CHAIN_EXT_DATA) {
		k->id = k->e.io->id;
	} else if (k->e.kind == CHAIN_EXT_COPY) {
		struct chain_layer_info li;
		struct qcow2_run r;

		/* No identity known: the extent compares as different. */
		if (!chain_layer_info(k->c, k->e.depth, &li) && li.img && li.io &&
		    !qcow2_image_map(li.img, pos, 1, &r) && r.kind == QCOW2_COMPRESSED) {
			k->id = li.io->id;
			k->chost = r.host;
		}
	}
	return 0;
}

static bool cursor_same(const struct cursor *n, const struct cursor *o, uint64_t pos)
{
	if (n->e.kind != o->e.kind)
		return false;
	if (n->e.kind == CHAIN_EXT_ZERO)
		return true;
	if (!n->id || !o->id || strcmp(n->id, o->id))
		return false;
	if (n->e.kind == CHAIN_EXT_DATA)
		return n->e.host_off + (pos - n->at) == o->e.host_off + (pos - o->at);
	/* The same compressed cluster, at the same guest offset: the same bytes. */
	return n->chost == o->chost;
}

/* Both views mapped over [pos, end) (inside both sizes), differences emitted. */
static int compare_range(struct emitter *em, struct chain *newer, struct chain *older,
			 uint64_t pos, uint64_t end)
{
	struct cursor n = { .c = newer }, o = { .c = older };

	while (pos < end) {
		uint64_t step;
		int rc = 0;

		if (!n.valid || n.at + n.e.len <= pos)
			rc = cursor_map(&n, pos, end);
		if (!rc && (!o.valid || o.at + o.e.len <= pos))
			rc = cursor_map(&o, pos, end);
		if (rc)
			return rc;
		step = min64(n.at + n.e.len, o.at + o.e.len) - pos;
		if (!cursor_same(&n, &o, pos) && (rc = emit(em, pos, step, n.e.kind != CHAIN_EXT_ZERO)))
			return rc;
		pos += step;
	}
	return 0;
}

/* older's layers are newer's from depth k down. */
static int changed_suffix(struct emitter *em, struct chain *newer, int k, uint64_t osize)
{
	uint64_t nsize = chain_size(newer), pos = 0;
	struct side up;
	int rc = side_open(&up, newer, 0, k);

	while (!rc && pos < nsize) {
		uint64_t end;
		int c = resolve(&up, pos, &end);

		if (c < 0) {
			rc = c;
			break;
		}
		end = min64(end, pos < osize ? min64(osize, nsize) : nsize);
		/* Nothing above older's top answers: newer reads older's top there,
		 * which past older's size reads as zeros. */
		if (c != C_NONE || pos >= osize)
			rc = emit(em, pos, end - pos, c == C_DATA);
		pos = end;
	}
	side_close(&up);
	return rc;
}

static int changed_general(struct emitter *em, struct chain *newer, struct chain *older, int s,
			   uint64_t osize)
{
	uint64_t nsize = chain_size(newer), pos = 0;
	struct side un = { 0 }, uo = { 0 };
	int rc = side_open(&un, newer, 0, chain_depth(newer) - s);

	if (!rc)
		rc = side_open(&uo, older, 0, chain_depth(older) - s);
	while (!rc && pos < nsize) {
		uint64_t end, eo = UINT64_MAX;
		int cn, co;

		if (pos >= osize) {
			rc = emit_view(em, newer, pos, nsize);
			break;
		}
		cn = resolve(&un, pos, &end);
		co = cn < 0 ? 0 : resolve(&uo, pos, &eo);
		if (cn < 0 || co < 0) {
			rc = cn < 0 ? cn : co;
			break;
		}
		end = min64(min64(end, eo), min64(osize, nsize));
		if (cn == C_NONE && co == C_NONE)
			;  /* both read the common suffix here (or both zeros, with none) */
		else if ((cn == C_ZERO || cn == C_PAST) && (co == C_ZERO || co == C_PAST))
			;  /* both read zeros */
		else
			rc = compare_range(em, newer, older, pos, end);
		pos = end;
	}
	side_close(&un);
	side_close(&uo);
	return rc;
}

static int changed(struct chain *newer, struct chain *older, bool compare, chain_range_fn cb, void *arg)
{
	struct emitter em = { .cb = cb, .arg = arg };
	uint64_t osize = chain_size(older);
	int s, rc = common_suffix(newer, older, &s);

	if (rc)
		return rc;
	if (s == chain_depth(older) && !compare)
		rc = changed_suffix(&em, newer, chain_depth(newer) - s, osize);
	else
		rc = changed_general(&em, newer, older, s, osize);
	return rc ? rc : emit_flush(&em);
}

int chain_changed(struct chain *newer, struct chain *older, chain_range_fn cb, void *arg)
{
	return changed(newer, older, false, cb, arg);
}

int chain_changed_compare(struct chain *newer, struct chain *older, chain_range_fn cb, void *arg)
{
	return changed(newer, older, true, cb, arg);
}

int chain_allocated(struct chain *c, chain_range_fn cb, void *arg)
{
	struct emitter em = { .cb = cb, .arg = arg };
	uint64_t size = chain_size(c), pos = 0;
	struct side all;
	int rc = side_open(&all, c, 0, chain_depth(c));

	while (!rc && pos < size) {
		uint64_t end;
		int k = resolve(&all, pos, &end);

		if (k < 0) {
			rc = k;
			break;
		}
		end = min64(end, size);
		if (k == C_DATA || k == C_ZERO)
			rc = emit(&em, pos, end - pos, k == C_DATA);
		pos = end;
	}
	side_close(&all);
	return rc ? rc : emit_flush(&em);
}

/* -- JSON ------------------------------------------------------------------ */

static int json_put(struct extent_json *j, const char *s, size_t n)
{
	if (j->len + n + 1 > j->cap) {
		size_t cap = j->cap ? j->cap : 256;
		char *b;

		while (cap < j->len + n + 1)
			cap *= 2;
		if (j->max && cap > j->max + 1)
			cap = j->max + 1;
		if (cap < j->len + n + 1)
			return -EFBIG;
		b = realloc(j->buf, cap);
		if (!b)
			return -ENOMEM;
		j->buf = b;
		j->cap = cap;
	}
	memcpy(j->buf + j->len, s, n);
	j->len += n;
	j->buf[j->len] = 0;
	return 0;
}

void extent_json_init(struct extent_json *j, size_t max)
{
	memset(j, 0, sizeof(*j));
	j->max = max;
}

int extent_json_add(void *arg, uint64_t off, uint64_t len, bool exists)
{
	struct extent_json *j = arg;
	char item[96];
	int n = snprintf(item, sizeof(item), "%s{\"offset\":%" PRIu64 ",\"length\":%" PRIu64 ",\"exists\":\"%s\"}",
			 j->ranges ? "," : "[", off, len, exists ? "true" : "false");
	int rc = json_put(j, item, n);

	if (!rc) {
		j->ranges++;
		j->bytes += len;
	}
	return rc;
}

int extent_json_finish(struct extent_json *j, char **out, size_t *len)
{
	int rc = json_put(j, j->ranges ? "]" : "[]", j->ranges ? 1 : 2);

	if (rc)
		return rc;
	*out = j->buf;
	*len = j->len;
	j->buf = NULL;
	j->len = j->cap = 0;
	j->ranges = j->bytes = 0;
	return 0;
}

void extent_json_release(struct extent_json *j)
{
	free(j->buf);
	j->buf = NULL;
	j->len = j->cap = 0;
}

static int json_result(struct extent_json *j, int rc, char **out, size_t *len)
{
	if (!rc)
		rc = extent_json_finish(j, out, len);
	extent_json_release(j);
	return rc;
}

int chain_changed_json(struct chain *newer, struct chain *older, size_t max, char **out, size_t *len)
{
	struct extent_json j;

	extent_json_init(&j, max);
	return json_result(&j, chain_changed(newer, older, extent_json_add, &j), out, len);
}

int chain_allocated_json(struct chain *c, size_t max, char **out, size_t *len)
{
	struct extent_json j;

	extent_json_init(&j, max);
	return json_result(&j, chain_allocated(c, extent_json_add, &j), out, len);
}
