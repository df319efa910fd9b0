/*
 * plcheck: what a mount does to a directory store, checked in one process
 * (the power-loss sweep checks hundreds of crash states; a process per view
 * was most of the cost).
 *
 *   plcheck [--cfg STORAGE_CFG] PATH VOLUME
 *
 * Opens the store and runs recovery (as a mount does before the first scan),
 * then prints one line per view of VOLUME, "1<TAB>view<TAB>size<TAB>crc",
 * crc being zlib's crc32 and adler32 of the view's bytes as 16 hex digits.
 * Then closes it, opens it again (a second mount), recovers again and
 * prints the same lines with "2". Exit status 0, or 1 when recovery, the
 * scan or a read fails (the error on stderr).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/log.h"
#include "dir/dir_store.h"
#include "store/view_reader.h"

#define CHUNK (1u << 20)

static int hash_view(struct store *s, struct store_listing *l, const struct store_volume *v,
		     const struct store_view *w, char *buf)
{
	struct view_reader *r;
	uLong crc = crc32(0, NULL, 0), ad = adler32(0, NULL, 0);
	uint64_t off = 0;
	int rc = s->ops->open_view(s, l, v, w, &r);

	if (rc)
		return rc;
	while (off < r->size) {
		size_t len = r->size - off < CHUNK ? (size_t)(r->size - off) : CHUNK;
		ssize_t n = r->ops->read(r, buf, len, off);

		if (n < 0) {
			rc = (int)n;
			break;
		}
		crc = crc32(crc, (const Bytef *)buf, (uInt)len);
		ad = adler32(ad, (const Bytef *)buf, (uInt)len);
		off += len;
	}
	if (rc == 0)
		printf("\t%s\t%" PRIu64 "\t%08lx%08lx\n", w->name, r->size, crc, ad);
	view_reader_put(r);
	return rc;
}

static int mount_once(const char *path, const struct store_config *cfg, const char *vol, int pass,
		      char *buf)
{
	struct store *s;
	struct store_listing *l;
	int rc = dir_store_open(path, cfg, &s);

	if (rc) {
		fprintf(stderr, "plcheck: open: %s\n", strerror(-rc));
		return rc;
	}
	if ((rc = s->ops->recover(s)))
		fprintf(stderr, "plcheck: recovery: %s\n", strerror(-rc));
	else if ((rc = s->ops->scan(s, &l)))
		fprintf(stderr, "plcheck: scan: %s\n", strerror(-rc));
	else {
		for (int i = 0; i < l->nvols && rc == 0; i++) {
			if (strcmp(l->vols[i].name, vol))
				continue;
			for (int j = 0; j < l->vols[i].nviews && rc == 0; j++) {
				printf("%d", pass);
				rc = hash_view(s, l, &l->vols[i], &l->vols[i].views[j], buf);
				if (rc)
					fprintf(stderr, "plcheck: read %s: %s\n", l->vols[i].views[j].name,
						strerror(-rc));
			}
		}
		s->ops->listing_free(s, l);
	}
	s->ops->close(s);
	return rc;
}

int main(int argc, char **argv)
{
	struct store_config cfg = { 0 };
	char *buf;
	int i = 1, rc;

	vlog_init(true, false);
	if (argc > 2 && !strcmp(argv[1], "--cfg")) {
		cfg.pve_storage_cfg = argv[2];
		i = 3;
	}
	if (argc - i != 2) {
		fprintf(stderr, "usage: plcheck [--cfg STORAGE_CFG] PATH VOLUME\n");
		return 2;
	}
	if (!(buf = malloc(CHUNK)))
		return 1;
	rc = mount_once(argv[i], &cfg, argv[i + 1], 1, buf);
	if (rc == 0)
		rc = mount_once(argv[i], &cfg, argv[i + 1], 2, buf);
	free(buf);
	return rc ? 1 : 0;
}
