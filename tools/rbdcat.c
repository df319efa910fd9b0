/*
 * rbdcat: the RBD store (rbd/) driven from the command line, for tests and
 * debugging, through the same store_ops and view_reader the daemon uses.
 *
 *   rbdcat [-c CONF] [-i ID] [-k KEYRING] [-b BYTES] SOURCE COMMAND ...
 *
 *   ls                             volumes and views: name ident size mtime snapshot
 *   cat IMAGE VIEW [OFF LEN]       the view's bytes to stdout (reads of -b bytes, default 64 MiB)
 *   map IMAGE VIEW                 extents: "OFFSET LENGTH data|zero"
 *   changed IMAGE VIEW [OLDER]     JSON as `rbd diff [--from-snap OLDER] IMAGE@VIEW --format json`
 *   mkdir IMAGE SNAP | rmdir IMAGE SNAP
 *   scantime                       two scans and a changed(): milliseconds each
 *   checkchanged SHELL-COMMAND     changed() before (0 expected) and after running the command
 *   readloop IMAGE VIEW SECONDS    read 64 KiB at 0 every 0.25 s: "T ok" / "T err ERRNO" lines
 *   mkimages PREFIX COUNT          create COUNT empty 4 MiB images PREFIX0..: test fixtures
 *
 * SOURCE is "rbd:<pool>[/<namespace>]". Exit status: 0; for mkdir/rmdir the
 * errno (and its name on stderr); 1 for other failures.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "rbd/rbd.h"
#include "store/snapshot_rules.h"
#include "store/store_registry.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* -c/-i/-k as the daemon's ceph_*= options (rbd/rbd_kind.c). */
static int rbd_option(struct store_config *cfg, const char *name, const char *val)
{
	char opt[4200];

	snprintf(opt, sizeof(opt), "%s%s", name, val);
	if (store_registry_option(cfg, opt) != 1) {
		fprintf(stderr, "rbdcat: bad option %s\n", opt);
		exit(2);
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: rbdcat [-c CONF] [-i ID] [-k KEYRING] [-b BYTES] rbd:POOL[/NS] "
			"ls|cat|map|changed|mkdir|rmdir|scantime|checkchanged|readloop|mkimages ...\n");
	exit(2);
}

static const struct store_volume *find_vol(const struct store_listing *l, const char *name)
{
	for (int i = 0; i < l->nvols; i++)
		if (!strcmp(l->vols[i].name, name))
			return &l->vols[i];
	return NULL;
}

static const struct store_view *find_view(const struct store_volume *v, const char *name)
{
	for (int i = 0; i < v->nviews; i++)
		if (!strcmp(v->views[i].name, name))
			return &v->views[i];
	return NULL;
}

static int open_named(struct store *s, const struct store_listing *l, const char *image, const char *view,
		      struct view_reader **out)
{
	const struct store_volume *v = find_vol(l, image);
	const struct store_view *w = v ? find_view(v, view) : NULL;
	int r;

	if (!w) {
		fprintf(stderr, "rbdcat: no view %s/%s\n", image, view);
		return -ENOENT;
	}
	r = s->ops->open_view(s, l, v, w, out);
	if (r < 0)
		fprintf(stderr, "rbdcat: open %s/%s: %s\n", image, view, strerror(-r));
	return r;
}

struct json_out {
	int n;
};

static int print_range(void *arg, uint64_t off, uint64_t len, bool exists)
{
	struct json_out *j = arg;

	printf("%s{\"offset\":%" PRIu64 ",\"length\":%" PRIu64 ",\"exists\":\"%s\"}", j->n++ ? "," : "", off,
	       len, exists ? "true" : "false");
	return 0;
}

struct mk {
	rados_ioctx_t io;
	const char *prefix;
	int count, next, err;
	pthread_mutex_t lock;
};

static void *mk_thread(void *arg)
{
	struct mk *m = arg;
	char name[256];
	int order = 22;

	for (;;) {
		int i, r;

		pthread_mutex_lock(&m->lock);
		i = m->next++;
		pthread_mutex_unlock(&m->lock);
		if (i >= m->count)
			return NULL;
		snprintf(name, sizeof(name), "%s%d", m->prefix, i);
		r = rbd_create(m->io, name, 4u << 20, &order);
		if (r < 0 && r != -EEXIST)
			m->err = r;
	}
}

int main(int argc, char **argv)
{
	struct store_config cfg = { 0 };
	struct store *s = NULL;
	struct store_listing *l = NULL;
	size_t bufsize = 64u << 20;
	int opt, r, rc = 1;
	const char *cmd;

	while ((opt = getopt(argc, argv, "c:i:k:b:")) != -1) {
		switch (opt) {
		case 'c': r = rbd_option(&cfg, "ceph_conf=", optarg); break;
		case 'i': r = rbd_option(&cfg, "ceph_id=", optarg); break;
		case 'k': r = rbd_option(&cfg, "ceph_keyring=", optarg); break;
		case 'b': bufsize = strtoull(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (argc - optind < 2 || !bufsize)
		usage();
	vlog_init(true, false);
	cmd = argv[optind + 1];
	double t0 = now();
	r = rbd_store_open(argv[optind], &cfg, &s);
	if (r < 0) {
		fprintf(stderr, "rbdcat: %s: %s (after %.1f s)\n", argv[optind], strerror(-r), now() - t0);
		return 1;
	}
	argv += optind + 2;
	argc -= optind + 2;
	if (!strcmp(cmd, "mkdir") || !strcmp(cmd, "rmdir")) {
		if (argc != 2)
			usage();
		r = store_snapshot_check(s->cfg, !strcmp(cmd, "mkdir"), argv[1]);
		if (r == 0)
			r = (!strcmp(cmd, "mkdir") ? s->ops->snapshot_take : s->ops->snapshot_remove)(s, argv[0], argv[1], NULL);
		if (r < 0)
			fprintf(stderr, "%s\n", strerrorname_np(-r));
		rc = -r;
		goto out;
	}
	if (!strcmp(cmd, "mkimages")) {
		struct mk m = { rbd_of(s)->io, argc == 2 ? argv[0] : "img", argc == 2 ? atoi(argv[1]) : 0, 0, 0,
				PTHREAD_MUTEX_INITIALIZER };
		pthread_t th[4];

		for (int i = 0; i < 4; i++)
			pthread_create(&th[i], NULL, mk_thread, &m);
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		if (m.err)
			fprintf(stderr, "rbdcat: mkimages: %s\n", strerror(-m.err));
		rc = m.err ? 1 : 0;
		goto out;
	}
	t0 = now();
	r = s->ops->scan(s, &l);
	if (r < 0) {
		fprintf(stderr, "rbdcat: scan: %s\n", strerror(-r));
		goto out;
	}
	if (!strcmp(cmd, "ls")) {
		printf("store %s\n", s->name);
		for (int i = 0; i < l->nvols; i++) {
			const struct store_volume *v = &l->vols[i];

			for (int k = 0; k < v->nviews; k++)
				printf("%s %s %s %" PRIu64 " %" PRId64 " %d\n", v->name, v->views[k].name,
				       v->views[k].ident, v->views[k].size, v->views[k].mtime, v->views[k].snapshot);
		}
		rc = 0;
	} else if (!strcmp(cmd, "cat") && (argc == 2 || argc == 4)) {
		struct view_reader *vr;
		uint64_t off = 0, len, end;
		char *buf;

		if (open_named(s, l, argv[0], argv[1], &vr) < 0)
			goto out;
		if (argc == 4) {
			off = strtoull(argv[2], NULL, 0);
			len = strtoull(argv[3], NULL, 0);
		} else {
			len = vr->size;
		}
		end = off + len > vr->size ? vr->size : off + len;
		buf = malloc(bufsize);
		rc = buf ? 0 : 1;
		while (!rc && off < end) {
			size_t n = end - off < bufsize ? end - off : bufsize;
			ssize_t got = vr->ops->read(vr, buf, n, off);

			if (got < 0) {
				fprintf(stderr, "rbdcat: read %zu at %" PRIu64 ": %s\n", n, off, strerror((int)-got));
				rc = 1;
			} else if (fwrite(buf, 1, n, stdout) != n) {
				rc = 1;
			}
			off += n;
		}
		free(buf);
		view_reader_put(vr);
		if (fflush(stdout))
			rc = 1;
	} else if (!strcmp(cmd, "map") && argc == 2) {
		struct view_reader *vr;
		uint64_t off = 0;

		if (open_named(s, l, argv[0], argv[1], &vr) < 0)
			goto out;
		rc = 0;
		while (off < vr->size) {
			struct view_extent e;

			r = vr->ops->map(vr, off, vr->size - off, &e);
			if (r < 0) {
				fprintf(stderr, "rbdcat: map at %" PRIu64 ": %s\n", off, strerror(-r));
				rc = 1;
				break;
			}
			printf("%" PRIu64 " %" PRIu64 " %s\n", off, e.len, e.kind == VIEW_EXT_ZERO ? "zero" : "data");
			off += e.len;
		}
		view_reader_put(vr);
	} else if (!strcmp(cmd, "changed") && (argc == 2 || argc == 3)) {
		struct view_reader *vr, *older = NULL;
		struct json_out j = { 0 };

		if (open_named(s, l, argv[0], argv[1], &vr) < 0)
			goto out;
		if (argc == 3 && open_named(s, l, argv[0], argv[2], &older) < 0) {
			view_reader_put(vr);
			goto out;
		}
		printf("[");
		r = vr->ops->changed(vr, older, print_range, &j);
		printf("]\n");
		if (r < 0) {
			fprintf(stderr, "rbdcat: changed: %s\n", strerror(-r));
			rc = r == -EINVAL ? 22 : 1;
		} else {
			rc = 0;
		}
		view_reader_put(older);
		view_reader_put(vr);
	} else if (!strcmp(cmd, "scantime") && argc == 0) {
		double t1 = now(), t2, t3;
		struct store_listing *l2;

		r = s->ops->changed(s, l);
		t2 = now();
		if (s->ops->scan(s, &l2) == 0) {
			t3 = now();
			printf("volumes %d first_scan_ms %.1f changed %d changed_ms %.1f rescan_ms %.1f\n", l->nvols,
			       (t1 - t0) * 1e3, r, (t2 - t1) * 1e3, (t3 - t2) * 1e3);
			s->ops->listing_free(s, l2);
			rc = 0;
		}
	} else if (!strcmp(cmd, "checkchanged") && argc == 1) {
		int before = s->ops->changed(s, l), after;

		if (system(argv[0]) != 0)
			fprintf(stderr, "rbdcat: command failed: %s\n", argv[0]);
		after = s->ops->changed(s, l);
		printf("before %d after %d\n", before, after);
		rc = 0;
	} else if (!strcmp(cmd, "readloop") && argc == 3) {
		struct view_reader *vr;
		double end = now() + strtod(argv[2], NULL), start = now();
		char *buf = malloc(65536);

		if (!buf || open_named(s, l, argv[0], argv[1], &vr) < 0)
			goto out;
		setvbuf(stdout, NULL, _IOLBF, 0);
		printf("start\n");
		while (now() < end) {
			double t = now();
			size_t n = vr->size < 65536 ? vr->size : 65536;
			ssize_t got = vr->ops->read(vr, buf, n, 0);

			if (got < 0)
				printf("%.2f err %d %.2f\n", t - start, (int)-got, now() - t);
			else
				printf("%.2f ok %.2f\n", t - start, now() - t);
			usleep(250000);
		}
		free(buf);
		view_reader_put(vr);
		rc = 0;
	} else {
		usage();
	}
out:
	if (l)
		s->ops->listing_free(s, l);
	s->ops->close(s);
	store_registry_options_free(&cfg);
	return rc;
}
