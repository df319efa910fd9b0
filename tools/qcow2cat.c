/*
 * qcow2cat: flatten a chain of qcow2/raw image files through chain/, the
 * same engine the daemon uses, for tests, debugging and fuzz replays.
 *
 *   qcow2cat [-f auto|qcow2|raw] [-t THREADS] IMAGE [OFFSET LENGTH]
 *   qcow2cat [-f ...] --map IMAGE   (lines: offset length zero|data|copy depth [host_off layer])
 *   qcow2cat --probe IMAGE          (chain_probe_layer: format, size, backing, backing format)
 *   qcow2cat --changed OLDER IMAGE  (chain_changed of IMAGE's chain vs OLDER's, rbd diff JSON;
 *                                    with --compare: chain_changed_compare)
 *   qcow2cat --allocated IMAGE      (chain_allocated, rbd diff JSON)
 *   --stats: at exit, the peak resident memory (VmHWM) on stderr, for tests
 *   --id-by-name: a layer's identity is its file name up to the first '@'
 *     ("img@a.qcow2" and "img@b.qcow2" are one layer seen at two instants;
 *     tests use it to stand for two L1 tables of one image)
 *   -s SNAP / --snapshot SNAP       read (or map) the view at internal snapshot SNAP of IMAGE
 *   qcow2cat --check IMAGE          (qcow2_check_layer, the writer's gate: qemu-img check's
 *                                    corruptions, leaks and check errors, then what of them are
 *                                    COPIED flags, entries chain/ cannot read, clusters compared;
 *                                    exit 0 clean, 2 corrupt, 3 leaks only, as qemu-img check)
 *
 * Layers are plain files here (a tiny file-backed layer_io). A backing
 * string is resolved relative to the directory of the image that names
 * it; a string with a '/' is refused unless it is an absolute path inside
 * that same directory (the file analogue of "stays inside the VG").
 * Layer identity for loop detection is the (st_dev, st_ino) pair.
 *
 * Exit status: 0, or 1 after the engine (or we) logged why.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain/chain.h"
#include "chain/diff.h"
#include "chain/qcow2_check.h"
#include "common/log.h"
#include "tools/lib/file_io.h"

#define CHUNK (4u << 20)

static unsigned file_flags; /* TOOL_FILE_ID_BY_NAME with --id-by-name */

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || end == s || *end || s[0] == '-' ? -EINVAL : 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= n;
	}
	return 0;
}

static const char *kind_name(enum chain_extent_kind k)
{
	return k == CHAIN_EXT_ZERO ? "zero" : k == CHAIN_EXT_DATA ? "data" : "copy";
}

static int do_map(struct chain *c)
{
	uint64_t off = 0, size = chain_size(c);

	while (off < size) {
		struct chain_extent e;
		int rc = chain_map(c, off, size - off, &e);

		if (rc) {
			fprintf(stderr, "qcow2cat: map at %" PRIu64 ": %s\n", off, strerror(-rc));
			return 1;
		}
		printf("%-20" PRIu64 " %-20" PRIu64 " %-5s %-6d", off, e.len, kind_name(e.kind), e.depth);
		if (e.kind == CHAIN_EXT_DATA)
			printf(" %" PRIu64 " %s", e.host_off, e.io->name);
		printf("\n");
		off += e.len;
	}
	return fflush(stdout) ? 1 : 0;
}

/* Threaded reading: chunks handed out in order, each thread writes its own with pwrite-free ordering. */
struct job {
	struct chain *c;
	uint64_t off, len;
	char *out;               /* whole range, len bytes */
	uint64_t next;           /* atomic: next chunk index */
	int rc;                  /* atomic: first error */
};

static void *reader(void *arg)
{
	struct job *j = arg;
	uint64_t nchunks = (j->len + CHUNK - 1) / CHUNK;

	for (;;) {
		uint64_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED), at, n;
		ssize_t r;

		if (i >= nchunks || __atomic_load_n(&j->rc, __ATOMIC_RELAXED))
			return NULL;
		at = i * CHUNK;
		n = j->len - at < CHUNK ? j->len - at : CHUNK;
		r = chain_read(j->c, j->out + at, n, j->off + at);
		if (r < 0 || (uint64_t)r != n)
			__atomic_store_n(&j->rc, r < 0 ? (int)r : -EIO, __ATOMIC_RELAXED);
	}
}

static int do_read(struct chain *c, uint64_t off, uint64_t len, int threads)
{
	uint64_t size = chain_size(c);
	int rc = 0;

	if (off >= size)
		return 0;
	if (len > size - off)
		len = size - off;
	if (threads > 1 && len <= (1ULL << 30)) {
		struct job j = { .c = c, .off = off, .len = len, .out = malloc(len ? len : 1) };
		pthread_t tid[64];
		int n = threads > 64 ? 64 : threads;

		if (!j.out)
			return -ENOMEM;
		for (int i = 0; i < n; i++)
			if (pthread_create(&tid[i], NULL, reader, &j))
				n = i;
		for (int i = 0; i < n; i++)
			pthread_join(tid[i], NULL);
		rc = n ? j.rc : -EAGAIN;
		if (!rc)
			rc = write_all(1, j.out, len);
		free(j.out);
		return rc;
	}
	char *buf = malloc(CHUNK);

	if (!buf)
		return -ENOMEM;
	while (len && !rc) {
		size_t n = len < CHUNK ? len : CHUNK;
		ssize_t r = chain_read(c, buf, n, off);

		if (r < 0)
			rc = r;
		else if ((size_t)r != n)
			rc = -EIO;
		else
			rc = write_all(1, buf, n);
		off += n;
		len -= n;
	}
	free(buf);
	return rc;
}

static int do_probe(const char *path)
{
	static const char *const names[] = { "auto", "raw", "qcow2", "bad" };
	struct chain_probe p;
	struct layer_io *io = NULL;
	int rc = tool_file_open(path, file_flags, &io);

	if (!rc)
		rc = chain_probe_layer(io, &p);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", path, strerror(-rc));
		if (io)
			layer_close(io);
		return 1;
	}
	printf("format %s\nvirtual_size %" PRIu64 "\nbacking %s\nbacking_format %s\n", names[p.format],
	       p.virtual_size, p.backing ? p.backing : "-", p.backing_format ? p.backing_format : "-");
	if (p.format == CHAIN_FMT_BAD)
		printf("error %s\n", p.error);
	chain_probe_release(&p);
	layer_close(io);
	return 0;
}

/* The chain of path, or NULL after saying why. */
static struct chain *open_chain(const char *path, enum chain_layer_format fmt)
{
	struct layer_io *top;
	struct chain *c;
	int rc = tool_file_open(path, file_flags, &top);

	if (!rc)
		rc = chain_open(top, fmt, &file_io_store, path, &c);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", path, strerror(-rc));
		return NULL;
	}
	return c;
}

/* JSON of chain_changed (older given) or chain_allocated on stdout, a newline after it. */
static int do_extents(struct chain *c, const char *older_path, enum chain_layer_format fmt, bool compare)
{
	struct chain *older = NULL;
	struct extent_json j;
	char *json = NULL;
	size_t len = 0;
	int rc;

	if (older_path && !(older = open_chain(older_path, fmt)))
		return 1;
	extent_json_init(&j, 0);
	rc = !older ? chain_allocated(c, extent_json_add, &j)
		: compare ? chain_changed_compare(c, older, extent_json_add, &j)
		: chain_changed(c, older, extent_json_add, &j);
	if (!rc)
		rc = extent_json_finish(&j, &json, &len);
	extent_json_release(&j);
	chain_put(older);
	if (!rc && !(rc = write_all(1, json, len)))
		rc = write_all(1, "\n", 1);
	free(json);
	if (rc)
		fprintf(stderr, "qcow2cat: extents: %s\n", strerror(-rc));
	return rc ? 1 : 0;
}

/* "peak_rss_kib N" on stderr: the process's own high-water mark, unlike
 * getrusage's, which also counts the parent's pages before exec. */
static void print_stats(void)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6))
			fprintf(stderr, "peak_rss_kib %ld\n", strtol(line + 6, NULL, 10));
	if (f)
		fclose(f);
}

static int do_check(const char *path)
{
	struct qcow2_layer_check r;
	struct layer_io *io = NULL;
	int rc = tool_file_open(path, file_flags, &io);

	if (!rc)
		rc = qcow2_check_layer(io, &r);
	layer_close(io);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", path, strerror(-rc));
		return 1;
	}
	printf("corruptions %" PRIu64 "\nleaks %" PRIu64 "\ncheck_errors %" PRIu64 "\ncopied %" PRIu64
	       "\nunreadable %" PRIu64 "\nclusters %" PRIu64 "\n", r.corruptions, r.leaks, r.check_errors,
	       r.copied, r.unreadable, r.clusters);
	if (r.first[0])
		printf("first %s\n", r.first);
	return r.corruptions || r.check_errors || r.unreadable ? 2 : r.leaks ? 3 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: qcow2cat [-f auto|qcow2|raw] [-s SNAPSHOT] [-t THREADS] [--cache BYTES] IMAGE [OFFSET LENGTH]\n"
			"       qcow2cat [-f auto|qcow2|raw] --map IMAGE\n"
			"       qcow2cat --probe IMAGE\n"
			"       qcow2cat [-f ...] --changed OLDER_IMAGE [--compare] IMAGE | --allocated IMAGE\n"
			"       qcow2cat --check IMAGE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "map", no_argument, NULL, 'm' },
		{ "probe", no_argument, NULL, 'p' },
		{ "check", no_argument, NULL, 'k' },
		{ "changed", required_argument, NULL, 'C' },
		{ "allocated", no_argument, NULL, 'A' },
		{ "compare", no_argument, NULL, 'K' },
		{ "stats", no_argument, NULL, 'S' },
		{ "id-by-name", no_argument, NULL, 'I' },
		{ "format", required_argument, NULL, 'f' },
		{ "threads", required_argument, NULL, 't' },
		{ "cache", required_argument, NULL, 'c' },
		{ "snapshot", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	enum chain_layer_format fmt = CHAIN_FMT_AUTO;
	uint64_t off = 0, len = UINT64_MAX, v;
	struct layer_io *top;
	struct chain *c;
	int opt, map = 0, probe = 0, check = 0, threads = 1, rc, extents = 0, compare = 0;
	const char *older = NULL, *snap = NULL;

	vlog_init(true, false);
	while ((opt = getopt_long(argc, argv, "mf:t:c:s:", opts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			map = 1;
			break;
		case 'p':
			probe = 1;
			break;
		case 'k':
			check = 1;
			break;
		case 'C':
			older = optarg;
			extents = 1;
			break;
		case 'A':
			extents = 1;
			break;
		case 'K':
			compare = 1;
			break;
		case 'S':
			atexit(print_stats);
			break;
		case 'I':
			file_flags = TOOL_FILE_ID_BY_NAME;
			break;
		case 'f':
			if (!strcmp(optarg, "qcow2"))
				fmt = CHAIN_FMT_QCOW2;
			else if (!strcmp(optarg, "raw"))
				fmt = CHAIN_FMT_RAW;
			else if (strcmp(optarg, "auto"))
				usage();
			break;
		case 't':
			if (parse_u64(optarg, &v) || v < 1 || v > 64)
				usage();
			threads = v;
			break;
		case 's':
			snap = optarg;
			break;
		case 'c':
			if (parse_u64(optarg, &v))
				usage();
			chain_set_cache_limit(v);
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 1 && (map || probe || check || extents || argc - optind != 3))
		usage();
	if (probe)
		return do_probe(argv[optind]);
	if (check)
		return do_check(argv[optind]);
	if (argc - optind == 3 && (parse_u64(argv[optind + 1], &off) || parse_u64(argv[optind + 2], &len)))
		usage();
	rc = tool_file_open(argv[optind], file_flags, &top);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", argv[optind], strerror(-rc));
		return 1;
	}
	rc = snap ? chain_open_snapshot(top, fmt, &file_io_store, snap, argv[optind], &c)
		  : chain_open(top, fmt, &file_io_store, argv[optind], &c);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", argv[optind], strerror(-rc));
		return 1;
	}
	if (extents) {
		rc = do_extents(c, older, fmt, compare);
	} else if (map) {
		rc = do_map(c);
	} else {
		rc = do_read(c, off, len, threads);
		if (rc)
			fprintf(stderr, "qcow2cat: %s: %s\n", argv[optind], strerror(-rc));
		rc = rc ? 1 : 0;
	}
	chain_put(c);
	return rc;
}
