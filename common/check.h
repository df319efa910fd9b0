/*
 * VSTORFS_CHECK(cond): a debug-build check of an invariant at a state
 * transition (SQLite's assert() habit). With VSTORFS_CHECKS defined (the
 * ASan build, SAN=1) a false condition logs where and aborts, so the
 * crash-and-recover tests stop at the first broken invariant; otherwise it
 * compiles to nothing: `cond` is type-checked, never evaluated.
 */
#ifndef VSTORFS_CHECK_H
#define VSTORFS_CHECK_H

#ifdef VSTORFS_CHECKS
#include <stdio.h>
#include <stdlib.h>
#define VSTORFS_CHECK(cond)                                                              \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "vstorfs: check failed: %s (%s:%d, %s)\n", #cond, \
				__FILE__, __LINE__, __func__);                            \
			abort();                                                          \
		}                                                                         \
	} while (0)
#else
#define VSTORFS_CHECK(cond) ((void)sizeof(!(cond))) /* typed, never evaluated */
#endif

#endif
