/*
 * intentcodec: store/intent.c on its own, for tests/test_intent.py.
 *   intentcodec decode FILE         decode a dir intent file
 *   intentcodec tag mkdir|rmdir VALUE  decode an LV tag value
 * Prints the record's fields one per line ("kind=...") and re-encodes it,
 * checking the encoding decodes to the same record; exit 0. A rejected
 * input prints "rejected: <errno name>" and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/intent.h"

static void show(const struct intent *in)
{
	printf("kind=%s\nsnap=%s\ns=%s\nc=%s\nbacking=%s\nid=%s\ntime=%lld\n", intent_kind_name(in->kind),
	       in->snap, in->s, in->c, in->backing, in->id, (long long)in->time);
}

static int rejected(int rc)
{
	printf("rejected: %s\n", rc == -ENOENT ? "ENOENT" : rc == -EINVAL ? "EINVAL" : strerror(-rc));
	return 1;
}

static int same(const struct intent *a, const struct intent *b)
{
	return a->kind == b->kind && !strcmp(a->snap, b->snap) && !strcmp(a->s, b->s) &&
	       !strcmp(a->c, b->c) && !strcmp(a->backing, b->backing) && !strcmp(a->id, b->id) &&
	       a->time == b->time;
}

static int decode_file(const char *path)
{
	static char buf[INTENT_TEXT_MAX + 2], enc[INTENT_TEXT_MAX + 2];
	struct intent in, again;
	ssize_t n, got = 0;
	int fd = open(path, O_RDONLY), rc;

	if (fd < 0) {
		perror(path);
		return 2;
	}
	while ((n = read(fd, buf + got, sizeof(buf) - (size_t)got)) > 0)
		got += n;
	close(fd);
	if ((rc = intent_decode(buf, (size_t)got, &in)))
		return rejected(rc);
	show(&in);
	rc = intent_encode(&in, enc, sizeof(enc));
	if (rc < 0 || intent_decode(enc, (size_t)rc, &again) || !same(&in, &again)) {
		printf("re-encoding differs\n");
		return 3;
	}
	return 0;
}

static int decode_tag(const char *which, const char *value)
{
	enum intent_kind k = !strcmp(which, "mkdir") ? INTENT_MKDIR_CHAIN : INTENT_RMDIR_COMMIT;
	struct intent in, again;
	char enc[2 * INTENT_NAME_MAX + 16];
	int rc = intent_tag_decode(value, k, &in);

	if (rc)
		return rejected(rc);
	show(&in);
	rc = intent_tag_encode(&in, enc, sizeof(enc));
	if (rc < 0 || intent_tag_decode(enc, k, &again) || !same(&in, &again) || strcmp(enc, value)) {
		printf("re-encoding differs\n");
		return 3;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "decode"))
		return decode_file(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "tag"))
		return decode_tag(argv[2], argv[3]);
	fprintf(stderr, "usage: intentcodec decode FILE | intentcodec tag mkdir|rmdir VALUE\n");
	return 2;
}
