/*
 * dir_reserve: the room a snapshot operation will write, taken from the
 * filesystem before its first change, and given back exactly if the
 * operation does not happen.
 *
 * A file's write can fail with ENOSPC or EDQUOT wherever it lands on a
 * hole: past the end of the file, or inside a sparse (preallocated)
 * image. dir_reserve_range() fallocates the holes of a range and records
 * them, so the writes that follow cannot run out of space or quota;
 * dir_reserve_undo() punches exactly those holes again and truncates the
 * file to its old size, so `df` reads what it read before. A filesystem
 * without fallocate (EOPNOTSUPP) is checked instead: the holes' bytes
 * against statvfs' free space (dir_reserve_check).
 *
 * Errors are negative errnos (-ENOSPC, -EDQUOT, -EIO); nothing is logged.
 */
#ifndef VSTORFS_DIR_RESERVE_H
#define VSTORFS_DIR_RESERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dir_reserve {
	int fd;                 /* -1: nothing reserved */
	uint64_t orig_size;     /* the file's size at dir_reserve_begin */
	uint64_t *off, *len;    /* the holes fallocated, in order of reservation */
	size_t n, cap;
	bool counting;          /* no fallocate here: holes counted in `counted` */
	uint64_t counted;
};

int dir_reserve_begin(struct dir_reserve *v, int fd);
/* Reserve every hole in [off, off + len) (past the end of the file too). */
int dir_reserve_range(struct dir_reserve *v, uint64_t off, uint64_t len);
/* 0, or -ENOSPC when counting and the filesystem has less free space than counted. */
int dir_reserve_check(struct dir_reserve *v);
/* The operation did not happen: punch the reserved holes, truncate to the old size. */
void dir_reserve_undo(struct dir_reserve *v);
/* The operation happened and its image ends at `end`: cut what lies past it
 * (never below the old size), keep the rest. */
void dir_reserve_trim(struct dir_reserve *v, uint64_t end);
void dir_reserve_free(struct dir_reserve *v);

#endif
