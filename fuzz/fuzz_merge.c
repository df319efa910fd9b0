/*
 * fuzz_merge: libFuzzer target for the merge writer (chain/merge.c,
 * chain/qcow2_writer.c). The input is a stack of two to four in-memory
 * layers (mem_layers.h) and the snapshot to delete; the target is merged
 * the way rmdir merges it, by commit or rebase, with the room the input
 * gives it. Afterwards:
 *   - every view that survives (each layer's but S's; after a commit S's
 *     bytes answer to C's name, as the LV rename leaves them) and was
 *     readable before reads the same bytes, merge failed or not;
 *   - the image written passes qemu-img check's rules (qcow2_check) with
 *     no more leaks than before, or the writer refused before writing.
 * A broken rule aborts, which libFuzzer records as a crash.
 *
 * Input: byte 0: layer count - 2 (mod 3); byte 1: bit 0 commit, bits 1-2
 * the child layer C (mod count - 1); byte 2: room past the target's end in
 * 4 KiB units; then the layers (mem_layers.h).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/merge.h"
#include "chain/qcow2_check.h"
#include "common/log.h"
#include "mem_layers.h"

#define VIEW_MAX (1u << 20)   /* larger views are not compared (nor merged) */

struct snap {                 /* one view, read whole */
	uint8_t *bytes;
	uint64_t size;
	bool ok;
};

static void broken(const char *what, int layer)
{
	fprintf(stderr, "fuzz_merge: %s (layer L%d)\n", what, layer);
	abort();
}

static struct chain *open_view(struct mem_stack *st, int name)
{
	struct chain *c;
	struct layer_io *io = mem_layer_open(st, name, 0);

	if (!io || chain_open(io, CHAIN_FMT_QCOW2, &st->store, "fuzz", &c))
		return NULL;
	if (chain_is_broken(c) || chain_size(c) > VIEW_MAX) {
		chain_put(c);
		return NULL;
	}
	return c;
}

static void read_view(struct mem_stack *st, int name, struct snap *s)
{
	struct chain *c = open_view(st, name);

	memset(s, 0, sizeof(*s));
	if (!c)
		return;
	s->size = chain_size(c);
	s->bytes = malloc(s->size + 1);
	s->ok = s->bytes && chain_read(c, s->bytes, s->size, 0) == (ssize_t)s->size;
	chain_put(c);
}

/* The layer a layer's backing string names, -1 for none or another name. */
static int backing_of(struct mem_stack *st, int name, char **str)
{
	struct layer_io *io = mem_layer_open(st, name, 0);
	struct chain_probe pr;
	int to = -1;

	*str = NULL;
	if (io && chain_probe_layer(io, &pr) == 0) {
		if (pr.format == CHAIN_FMT_QCOW2 && pr.backing) {
			if (pr.backing[0] == 'L' && pr.backing[1] >= '0' && pr.backing[1] < '0' + st->n &&
			    !pr.backing[2])
				to = pr.backing[1] - '0';
			*str = pr.backing;
			pr.backing = NULL;
		}
		chain_probe_release(&pr);
	}
	layer_close(io);
	return to;
}

/* Merge S into C or C into S as rmdir does. Returns what merge_run returned. */
static int merge(struct mem_stack *st, bool commit, int c, int s, int p, const char *p_str)
{
	struct chain *vc = open_view(st, c), *vs = open_view(st, s), *vp = p >= 0 ? open_view(st, p) : NULL;
	struct layer_io *target = NULL;
	struct qcow2_writer *w = NULL;
	struct qcow2_layer_check before, after;
	int rc = -EIO;

	/* The daemon refuses to merge over a broken chain, and commits only layers of one size. */
	if (!vc || !vs || (p_str && !vp))
		goto out;
	if (commit && chain_size(vs) != chain_size(vc))
		commit = false;
	target = mem_layer_open(st, commit ? s : c, 1);
	if (!target || qcow2_check_layer(target, &before))
		goto out;
	rc = qcow2_writer_open(target, merge_fill_from_view, commit ? vs : vc, &w);
	if (rc && st->writes)
		broken("the writer wrote before refusing", commit ? s : c);
	if (!rc)
		rc = merge_run(commit, vc, vs, vp, w, p_str, "fuzz");
	qcow2_writer_close(w);
	if (st->writes) {
		if (qcow2_check_layer(target, &after) || after.corruptions || after.check_errors)
			broken(after.first[0] ? after.first : "the written image cannot be checked", commit ? s : c);
		if (after.leaks > before.leaks)
			broken("the merge leaked clusters", commit ? s : c);
	}
	if (getenv("FUZZ_MERGE_TRACE")) /* replaying by hand: what happened */
		fprintf(stderr, "%s L%d into L%d: %d, %lu writes\n", commit ? "commit" : "rebase",
			commit ? c : s, commit ? s : c, rc, st->writes);
	if (!rc && commit) {   /* C's LV goes, S's takes its name */
		st->by_name[c] = st->by_name[s];
		st->by_name[s] = -1;
	} else if (!rc) {      /* S's LV goes */
		st->by_name[s] = -1;
	}
out:
	layer_close(target);
	if (vc)
		chain_put(vc);
	if (vs)
		chain_put(vs);
	if (vp)
		chain_put(vp);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snap before[MEM_MAX_LAYERS] = { 0 }, after;
	size_t extra[MEM_MAX_LAYERS] = { 0 }, left;
	struct mem_stack st;
	const uint8_t *tail;
	char *s_str = NULL, *p_str = NULL, *other;
	int n, c, s, p;
	bool commit;

	vlog_silence(true);
	if (size < 3)
		return 0;
	n = 2 + data[0] % 3;
	commit = data[1] & 1;
	c = (data[1] >> 1) % (n - 1);
	/* Room for either target; the one merged into is decided below. */
	for (int i = 0; i < n; i++)
		extra[i] = (size_t)data[2] * 4096;
	if (mem_stack_init(&st, n, data + 3, size - 3, extra, &tail, &left))
		goto out;
	s = backing_of(&st, c, &s_str);
	if (s < 0 || s == c)
		goto out;
	p = backing_of(&st, s, &p_str);
	/* rmdir refuses a snapshot another layer also reads through. */
	for (int i = 0; i < n; i++) {
		int to = i == c ? -1 : backing_of(&st, i, &other);

		if (i != c)
			free(other);
		if (to == s)
			goto out;
	}
	for (int i = 0; i < n; i++)
		read_view(&st, i, &before[i]);
	merge(&st, commit, c, s, p, p_str);
	for (int i = 0; i < n; i++) {
		if (i == s || !before[i].ok || st.by_name[i] < 0)
			continue;
		read_view(&st, i, &after);
		if (!after.ok || after.size != before[i].size ||
		    memcmp(after.bytes, before[i].bytes, after.size))
			broken("a surviving view reads differently", i);
		free(after.bytes);
	}
out:
	for (int i = 0; i < MEM_MAX_LAYERS; i++)
		free(before[i].bytes);
	free(s_str);
	free(p_str);
	mem_stack_free(&st);
	return 0;
}
