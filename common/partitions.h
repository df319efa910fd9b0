/*
 * partitions: the partitions of a disk image as the Linux kernel would
 * number them (sdX<N>, loopXp<N>), found by util-linux's libblkid (its
 * partition probing follows the kernel's own rules: GPT only behind a
 * protective or hybrid MBR, DOS primaries numbered by slot 1-4, logical
 * partitions of an extended partition 5, 6, ... in chain order, nested
 * BSD/Solaris/... labels after them). No table is parsed here by hand.
 *
 * What is left out, and why:
 *  - the DOS extended partition itself (the container of the logical ones):
 *    the kernel shows it only as a 1 KiB stub device holding the first EBR,
 *    never data anyone backs up; its number stays taken, so the logical
 *    ones are still 5+;
 *  - partitions starting at or past the end of the image; one reaching past
 *    the end is cut at the end (what the kernel does, with a warning).
 *
 * Start and length are in bytes (libblkid counts 512-byte sectors; a regular
 * file is probed with 512-byte logical sectors, as a loop device shows it).
 * Thread-safe: each call has its own probe and only preads the fd.
 */
#ifndef VSTORFS_PARTITIONS_H
#define VSTORFS_PARTITIONS_H

#include <stdbool.h>
#include <stdint.h>

struct partition {
	int number;          /* as the kernel numbers it */
	uint64_t start;      /* bytes from the start of the image */
	uint64_t length;     /* bytes */
	bool logical;        /* inside a DOS extended partition */
	char type[40];       /* GPT: type GUID; DOS: "0x83"... */
	char uuid[40];       /* GPT: partition GUID; DOS: "<disk id>-<NN>"; "" if none */
	char name[80];       /* GPT partition name (UTF-8), "" if none */
};

struct partition_table {
	char scheme[16];     /* "gpt", "dos", ... (libblkid's name); "" when there is no table */
	int n;
	struct partition *parts;  /* sorted by number */
};

/*
 * The partitions of the image read through fd, of `size` bytes (0: the
 * size fstat reports; a block device's size). 0 with t->n == 0 and an empty
 * scheme when there is no partition table; a negative errno when the
 * image cannot be read (its first and last sectors are read first: libblkid
 * itself would call an unreadable disk one without a table) or probed
 * (-EIO), -ENOMEM. Free with
 * partitions_release (also fine after a failure).
 */
int partitions_read(int fd, uint64_t size, struct partition_table *t);
void partitions_release(struct partition_table *t);

#endif
