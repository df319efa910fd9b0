/* slice_reader: see slice_reader.h. */
#include "store/slice_reader.h"

#include <errno.h>
#include <stdlib.h>

struct slice_reader {
	struct view_reader base;
	struct view_reader *parent;
	uint64_t start;
};

static ssize_t sr_read(struct view_reader *r, void *buf, size_t len, uint64_t off)
{
	struct slice_reader *s = (struct slice_reader *)r;

	return s->parent->ops->read(s->parent, buf, len, s->start + off);
}

static int sr_map(struct view_reader *r, uint64_t off, uint64_t len, struct view_extent *e)
{
	struct slice_reader *s = (struct slice_reader *)r;

	if (!s->parent->ops->map) {
		e->kind = VIEW_EXT_READ;
		e->len = len;
		return 0;
	}
	return s->parent->ops->map(s->parent, s->start + off, len, e);
}

static void sr_free(struct view_reader *r)
{
	view_reader_put(((struct slice_reader *)r)->parent);
	free(r);
}

static const struct view_reader_ops slice_reader_ops = {
	.read = sr_read,
	.map = sr_map,
	.free = sr_free,
};

int slice_reader_new(struct view_reader *parent, uint64_t start, uint64_t len, struct view_reader **out)
{
	struct slice_reader *s;

	if (start > parent->size || len > parent->size - start)
		return -EINVAL;
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->base.ops = &slice_reader_ops;
	s->base.size = len;
	s->base.refs = 1;
	view_reader_get(parent);
	s->parent = parent;
	s->start = start;
	*out = &s->base;
	return 0;
}
