/*
 * partlist: the partitions of a raw disk image (or block device) as
 * common/partitions.c finds them, one JSON object per line:
 *   {"scheme":"gpt"}
 *   {"number":1,"start":1048576,"length":8388608,"logical":false,"type":"...","uuid":"...","name":"..."}
 * For tests and debugging. Exit status 0, or 1 with a message.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/partitions.h"

/* Names and GUIDs are printable here except for quotes and backslashes. */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

int main(int argc, char **argv)
{
	struct partition_table t;
	int fd, rc;

	if (argc != 2) {
		fprintf(stderr, "usage: partlist IMAGE\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "partlist: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	rc = partitions_read(fd, 0, &t);
	close(fd);
	if (rc) {
		fprintf(stderr, "partlist: %s: %s\n", argv[1], strerror(-rc));
		return 1;
	}
	printf("{\"scheme\":");
	json_str(t.scheme);
	printf("}\n");
	for (int i = 0; i < t.n; i++) {
		const struct partition *p = &t.parts[i];

		printf("{\"number\":%d,\"start\":%" PRIu64 ",\"length\":%" PRIu64 ",\"logical\":%s,\"type\":",
		       p->number, p->start, p->length, p->logical ? "true" : "false");
		json_str(p->type);
		printf(",\"uuid\":");
		json_str(p->uuid);
		printf(",\"name\":");
		json_str(p->name);
		printf("}\n");
	}
	partitions_release(&t);
	return fflush(stdout) ? 1 : 0;
}
