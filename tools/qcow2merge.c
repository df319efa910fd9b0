/*
 * qcow2merge: delete a snapshot of a chain of image *files* with the
 * daemon's merge engine, so the writer can be tested against qemu-img
 * without LVM.
 *
 *   qcow2merge commit C   C's own data goes into its backing file S; S then
 *                         reads as C did (the caller renames S over C)
 *   qcow2merge rebase C   S's data C lacks goes into C; C's backing string
 *                         becomes S's own backing string (or none)
 *
 * The target file's size is its "LV": the merge must fit in it (truncate
 * the file larger to give it room), else ENOSPC before any write.
 * Exit status: 0, 1 after a logged failure, 2 for usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/merge.h"
#include "common/log.h"
#include "tools/lib/file_io.h"

struct views {
	struct chain *c, *s, *p;       /* p NULL when S has no backing */
	struct layer_io *target;       /* writable: S (commit) or C (rebase) */
	char *s_path, *p_backing;      /* S's file; S's backing string */
};

/* The view whose top is the file at path (read-only). */
static int open_view(const char *path, struct chain **out)
{
	struct layer_io *io;
	int rc = tool_file_open(path, 0, &io);

	if (rc)
		return rc;
	rc = chain_open(io, CHAIN_FMT_QCOW2, &file_io_store, path, out);
	if (!rc && chain_is_broken(*out)) {
		chain_put(*out);
		*out = NULL;
		rc = -EIO;
	}
	return rc;
}

/* The backing string of the qcow2 file io, malloc'd (NULL: none) */
static int backing_of(struct layer_io *io, char **backing)
{
	struct chain_probe pr;
	int rc = chain_probe_layer(io, &pr);

	if (rc)
		return rc;
	if (pr.format != CHAIN_FMT_QCOW2) {
		chain_probe_release(&pr);
		return -EIO;
	}
	*backing = pr.backing;
	pr.backing = NULL;
	chain_probe_release(&pr);
	return 0;
}

static int open_all(const char *c_path, bool commit, struct views *v)
{
	struct layer_io *c_io = NULL, *s_io = NULL;
	char *s_backing = NULL;
	int rc = tool_file_open(c_path, 0, &c_io);

	if (!rc && !(rc = backing_of(c_io, &s_backing)) && !s_backing)
		rc = -EINVAL; /* no snapshot below C */
	if (!rc && !(v->s_path = tool_file_backing_path(c_io, s_backing, &rc)))
		goto out;
	if (!rc)
		rc = tool_file_open(v->s_path, 0, &s_io);
	if (!rc)
		rc = backing_of(s_io, &v->p_backing);
	if (!rc)
		rc = open_view(c_path, &v->c);
	if (!rc)
		rc = open_view(v->s_path, &v->s);
	if (!rc && v->p_backing) {
		char *p_path = tool_file_backing_path(s_io, v->p_backing, &rc);

		if (p_path)
			rc = open_view(p_path, &v->p);
		free(p_path);
	}
	if (!rc)
		rc = tool_file_open(commit ? v->s_path : c_path, TOOL_FILE_WRITE, &v->target);
out:
	layer_close(c_io);
	layer_close(s_io);
	free(s_backing);
	return rc;
}

static void close_all(struct views *v)
{
	if (v->c)
		chain_put(v->c);
	if (v->s)
		chain_put(v->s);
	if (v->p)
		chain_put(v->p);
	layer_close(v->target);
	free(v->s_path);
	free(v->p_backing);
}

int main(int argc, char **argv)
{
	struct views v = { 0 };
	struct qcow2_writer *w = NULL;
	bool commit;
	int rc;

	vlog_init(true, false);
	if (argc != 3 || (strcmp(argv[1], "commit") && strcmp(argv[1], "rebase"))) {
		fprintf(stderr, "usage: qcow2merge commit|rebase CHILD_IMAGE\n");
		return 2;
	}
	commit = !strcmp(argv[1], "commit");
	rc = open_all(argv[2], commit, &v);
	if (!rc)
		rc = qcow2_writer_open(v.target, merge_fill_from_view, commit ? v.s : v.c, &w);
	if (!rc)
		rc = merge_run(commit, v.c, v.s, v.p, w, v.p_backing, argv[2]);
	qcow2_writer_close(w);
	close_all(&v);
	if (rc)
		fprintf(stderr, "qcow2merge: %s %s: %s\n", argv[1], argv[2], strerror(-rc));
	return rc ? 1 : 0;
}
