/*
 * qcow2cat: flatten a chain of qcow2/raw image files through chain/, the
 * same engine the daemon uses, for tests, debugging and fuzz replays.
 *
 *   qcow2cat [-f auto|qcow2|raw] [-t THREADS] IMAGE [OFFSET LENGTH]
 *   qcow2cat [-f ...] --map IMAGE   (lines: offset length zero|data|copy depth [host_off layer])
 *   qcow2cat --probe IMAGE          (chain_probe_layer: format, size, backing, backing format)
 *   qcow2cat --check IMAGE          (qcow2_check, qemu-img check's rules: corruptions, leaks;
 *                                    exit 0 clean, 2 corrupt, 3 leaks only, as qemu-img check)
 *
 * Layers are plain files here (tools/lib/file_io.h says how backing
 * strings resolve).
 *
 * Exit status: 0, or 1 after the engine (or we) logged why.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chain/chain.h"
#include "chain/qcow2_check.h"
#include "common/log.h"
#include "tools/lib/file_io.h"

#define CHUNK (4u << 20)

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
	int rc = file_io_open(path, false, &io);

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

static int do_check(const char *path)
{
	struct qcow2_check_result r;
	struct layer_io *io = NULL;
	int rc = file_io_open(path, false, &io);

	if (!rc)
		rc = qcow2_check(io, &r);
	layer_close(io);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", path, strerror(-rc));
		return 1;
	}
	printf("corruptions %" PRIu64 "\nleaks %" PRIu64 "\n", r.corruptions, r.leaks);
	if (r.first)
		printf("first %s\n", r.first);
	return r.corruptions ? 2 : r.leaks ? 3 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: qcow2cat [-f auto|qcow2|raw] [-t THREADS] [--cache BYTES] IMAGE [OFFSET LENGTH]\n"
			"       qcow2cat [-f auto|qcow2|raw] --map IMAGE\n"
			"       qcow2cat --probe IMAGE\n"
			"       qcow2cat --check IMAGE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "map", no_argument, NULL, 'm' },
		{ "probe", no_argument, NULL, 'p' },
		{ "check", no_argument, NULL, 'k' },
		{ "format", required_argument, NULL, 'f' },
		{ "threads", required_argument, NULL, 't' },
		{ "cache", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	enum chain_layer_format fmt = CHAIN_FMT_AUTO;
	uint64_t off = 0, len = UINT64_MAX, v;
	struct layer_io *top;
	struct chain *c;
	int opt, map = 0, probe = 0, check = 0, threads = 1, rc;

	vlog_init(true, false);
	while ((opt = getopt_long(argc, argv, "mf:t:c:", opts, NULL)) != -1) {
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
		case 'c':
			if (parse_u64(optarg, &v))
				usage();
			chain_set_cache_limit(v);
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 1 && (map || probe || check || argc - optind != 3))
		usage();
	if (probe)
		return do_probe(argv[optind]);
	if (check)
		return do_check(argv[optind]);
	if (argc - optind == 3 && (parse_u64(argv[optind + 1], &off) || parse_u64(argv[optind + 2], &len)))
		usage();
	rc = file_io_open(argv[optind], false, &top);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", argv[optind], strerror(-rc));
		return 1;
	}
	rc = chain_open(top, fmt, &file_io_store, argv[optind], &c);
	if (rc) {
		fprintf(stderr, "qcow2cat: %s: %s\n", argv[optind], strerror(-rc));
		return 1;
	}
	if (map) {
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
