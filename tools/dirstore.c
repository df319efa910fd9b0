/*
 * dirstore: drive a directory store (dir/) without the daemon, for tests
 * and debugging. Every command but "ls --no-recover" first runs recovery,
 * as a mount does.
 *
 *   dirstore [OPTS] ls PATH                    volume<TAB>view<TAB>size<TAB>mtime<TAB>snapshot<TAB>used<TAB>ident
 *   dirstore [OPTS] cat PATH VOLUME VIEW       the view's bytes to stdout (-t: through map(), splicing FD runs with pread)
 *   dirstore [OPTS] map PATH VOLUME VIEW       extents: offset length zero|fd|read
 *   dirstore [OPTS] mkdir PATH VOLUME SNAP
 *   dirstore [OPTS] rmdir PATH VOLUME SNAP
 *   dirstore [OPTS] recover PATH
 *   dirstore [OPTS] watch PATH SECONDS         scan, then print changed() once a second
 * OPTS: --cfg STORAGE_CFG  --shared-snapshots  --ro  --no-recover
 * Exit status: 0, or the errno of the failed operation (e.g. 16 EBUSY).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "dir/dir_store.h"
#include "store/snapshot_rules.h"
#include "store/view_reader.h"

static int write_all(const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(1, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EIO;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static const struct store_view *find_view(const struct store_listing *l, const char *vol,
					  const char *view, const struct store_volume **vout)
{
	for (int i = 0; i < l->nvols; i++) {
		if (strcmp(l->vols[i].name, vol))
			continue;
		*vout = &l->vols[i];
		for (int j = 0; j < l->vols[i].nviews; j++)
			if (!strcmp(l->vols[i].views[j].name, view))
				return &l->vols[i].views[j];
	}
	return NULL;
}

static int do_cat(struct store *s, struct store_listing *l, const char *vol, const char *view,
		  bool via_map, bool map_only)
{
	const struct store_volume *v = NULL;
	const struct store_view *w = find_view(l, vol, view, &v);
	struct view_reader *r;
	char *buf;
	uint64_t off = 0;
	int rc;

	if (!w) {
		fprintf(stderr, "dirstore: no view %s/%s\n", vol, view);
		return -ENOENT;
	}
	rc = s->ops->open_view(s, l, v, w, &r);
	if (rc)
		return rc;
	buf = malloc(1 << 20);
	if (!buf) {
		view_reader_put(r);
		return -ENOMEM;
	}
	while (off < r->size && rc == 0) {
		uint64_t len = r->size - off < (1 << 20) ? r->size - off : (1 << 20);

		if (via_map || map_only) {
			struct view_extent e;

			rc = r->ops->map(r, off, len, &e);
			if (rc)
				break;
			if (map_only) {
				printf("%" PRIu64 " %" PRIu64 " %s\n", off, e.len,
				       e.kind == VIEW_EXT_ZERO ? "zero" : e.kind == VIEW_EXT_FD ? "fd" : "read");
			} else if (e.kind == VIEW_EXT_ZERO) {
				memset(buf, 0, e.len < len ? e.len : len);
			} else if (e.kind == VIEW_EXT_FD) {
				uint64_t n = e.len < len ? e.len : len;

				if (pread(e.fd, buf, n, (off_t)e.fd_off) != (ssize_t)n)
					rc = -EIO;
			} else {
				ssize_t n = r->ops->read(r, buf, e.len < len ? e.len : len, off);

				rc = n < 0 ? (int)n : 0;
			}
			len = e.len < len ? e.len : len;
		} else {
			ssize_t n = r->ops->read(r, buf, len, off);

			rc = n < 0 ? (int)n : 0;
		}
		if (rc == 0 && !map_only)
			rc = write_all(buf, len);
		off += len;
	}
	free(buf);
	view_reader_put(r);
	return rc;
}

int main(int argc, char **argv)
{
	struct store_config cfg = { 0 };
	struct store *s;
	struct store_listing *l = NULL;
	bool recover = true, via_map = false;
	const char *cmd;
	int rc, i = 1;

	vlog_init(true, getenv("DIRSTORE_DEBUG") != NULL);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--cfg") && i + 1 < argc)
			cfg.pve_storage_cfg = argv[++i];
		else if (!strcmp(argv[i], "--shared-snapshots"))
			cfg.shared_snapshots = true;
		else if (!strcmp(argv[i], "--ro"))
			cfg.read_only = true;
		else if (!strcmp(argv[i], "--no-recover"))
			recover = false;
		else if (!strcmp(argv[i], "-t"))
			via_map = true;
		else {
			fprintf(stderr, "dirstore: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (argc - i < 2) {
		fprintf(stderr, "usage: dirstore [OPTS] ls|cat|map|mkdir|rmdir|recover|watch PATH ...\n");
		return 2;
	}
	cmd = argv[i];
	rc = dir_store_open(argv[i + 1], &cfg, &s);
	if (rc)
		return -rc;
	if (recover && (rc = s->ops->recover(s)))
		fprintf(stderr, "dirstore: recovery: %s\n", strerror(-rc));
	rc = 0;
	if (!strcmp(cmd, "recover")) {
		/* done above */
	} else if ((!strcmp(cmd, "mkdir") || !strcmp(cmd, "rmdir")) && argc - i == 4) {
		bool take = !strcmp(cmd, "mkdir");

		/* the checks fs/ applies to every mkdir/rmdir, as a mount would */
		rc = store_snapshot_check(s->cfg, take, argv[i + 3]);
		if (!rc)
			rc = (take ? s->ops->snapshot_take : s->ops->snapshot_remove)(s, argv[i + 2], argv[i + 3], NULL);
	} else if ((rc = s->ops->scan(s, &l)) == 0) {
		if (!strcmp(cmd, "ls")) {
			for (int v = 0; v < l->nvols; v++)
				for (int w = 0; w < l->vols[v].nviews; w++) {
					const struct store_view *x = &l->vols[v].views[w];

					printf("%s\t%s\t%" PRIu64 "\t%" PRId64 "\t%d\t%" PRIu64 "\t%s\n",
					       l->vols[v].name, x->name, x->size, x->mtime, x->snapshot,
					       x->used, x->ident);
				}
		} else if ((!strcmp(cmd, "cat") || !strcmp(cmd, "map")) && argc - i == 5 - 1) {
			rc = do_cat(s, l, argv[i + 2], argv[i + 3], via_map, !strcmp(cmd, "map"));
		} else if (!strcmp(cmd, "watch") && argc - i == 3) {
			for (int t = atoi(argv[i + 2]); t > 0; t--) {
				sleep(1);
				printf("%d\n", s->ops->changed(s, l));
				fflush(stdout);
			}
		} else {
			fprintf(stderr, "dirstore: bad command line\n");
			rc = -EINVAL;
		}
		s->ops->listing_free(s, l);
	}
	if (rc)
		fprintf(stderr, "dirstore: %s: %s\n", cmd, strerror(-rc));
	s->ops->close(s);
	return rc ? (-rc > 255 ? 1 : -rc) : 0;
}
