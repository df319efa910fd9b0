/*
 * partitions: see partitions.h. libblkid does the parsing; this only copies
 * its answer into plain structs with the kernel's view of the edges.
 */
#include "partitions.h"

#include <blkid/blkid.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512ULL

static void copy(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src ? src : "");
}

static int by_number(const void *a, const void *b)
{
	const struct partition *x = a, *y = b;

	return (x->number > y->number) - (x->number < y->number);
}

int partitions_read(int fd, uint64_t size, struct partition_table *t)
{
	blkid_probe pr;
	blkid_partlist ls;
	blkid_parttable tab;
	struct stat st;
	int n, rc = 0;

	memset(t, 0, sizeof(*t));
	if (!size) {
		if (fstat(fd, &st))
			return -errno;
		size = st.st_size;  /* 0 for a block device: libblkid asks the device */
	}
	/* libblkid reports an unreadable image as one without a table: read
	 * the sectors every table starts from (MBR, GPT header, backup GPT)
	 * once here so a failing disk is an error, not "no partitions". */
	if (size >= SECTOR) {
		uint8_t sec[SECTOR];

		errno = 0;
		if (pread(fd, sec, SECTOR, 0) != (ssize_t)SECTOR ||
		    pread(fd, sec, SECTOR, (size - SECTOR) / SECTOR * SECTOR) != (ssize_t)SECTOR)
			return errno ? -errno : -EIO;
	}
	pr = blkid_new_probe();
	if (!pr)
		return -ENOMEM;
	if (blkid_probe_set_device(pr, fd, 0, size) ||
	    blkid_probe_enable_superblocks(pr, 0) ||
	    blkid_probe_enable_partitions(pr, 1) ||
	    blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS)) {
		rc = -EIO;
		goto out;
	}
	size = blkid_probe_get_size(pr) > 0 ? (uint64_t)blkid_probe_get_size(pr) : size;
	ls = blkid_probe_get_partitions(pr);
	if (!ls)
		goto out;  /* nothing found (libblkid does not tell it from a read error) */
	n = blkid_partlist_numof_partitions(ls);
	tab = blkid_partlist_get_table(ls);
	if (n < 0) {
		rc = -EIO;
		goto out;
	}
	if (tab)
		copy(t->scheme, sizeof(t->scheme), blkid_parttable_get_type(tab));
	t->parts = calloc(n ? n : 1, sizeof(*t->parts));
	if (!t->parts) {
		rc = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		blkid_partition par = blkid_partlist_get_partition(ls, i);
		struct partition *p = &t->parts[t->n];
		blkid_loff_t start, len;
		const char *type;

		if (!par || blkid_partition_is_extended(par))
			continue;
		start = blkid_partition_get_start(par);
		len = blkid_partition_get_size(par);
		if (start < 0 || len <= 0 || (uint64_t)start >= size / SECTOR)
			continue;
		p->number = blkid_partition_get_partno(par);
		p->start = (uint64_t)start * SECTOR;
		p->length = (uint64_t)len * SECTOR;
		if (p->length > size - p->start)
			p->length = size - p->start;
		p->logical = blkid_partition_is_logical(par);
		type = blkid_partition_get_type_string(par);
		if (type)
			copy(p->type, sizeof(p->type), type);
		else
			snprintf(p->type, sizeof(p->type), "0x%x", blkid_partition_get_type(par));
		copy(p->uuid, sizeof(p->uuid), blkid_partition_get_uuid(par));
		copy(p->name, sizeof(p->name), blkid_partition_get_name(par));
		t->n++;
	}
	qsort(t->parts, t->n, sizeof(*t->parts), by_number);
out:
	blkid_free_probe(pr);
	if (rc)
		partitions_release(t);
	return rc;
}

void partitions_release(struct partition_table *t)
{
	free(t->parts);
	memset(t, 0, sizeof(*t));
}
