/*
 * crash points: test builds (-DVSTORFS_CRASH_HOOKS) kill the daemon with
 * SIGKILL at the step named by $VSTORFS_CRASH_AT, so tests can prove that
 * every intermediate state of a snapshot operation is recoverable, and
 * crash_fail(step) returns -EIO when $VSTORFS_FAIL_AT (a comma-separated
 * list) names the step, so tests can make one step fail the way a full or
 * broken disk would. Normal builds compile both to nothing.
 */
#ifndef VSTORFS_CRASH_H
#define VSTORFS_CRASH_H

#ifdef VSTORFS_CRASH_HOOKS
void crash_point(const char *step);
int crash_fail(const char *step);
#else
static inline void crash_point(const char *step)
{
	(void)step;
}

static inline int crash_fail(const char *step)
{
	(void)step;
	return 0;
}
#endif

#endif
