/*
 * crash points: test builds (-DVSTORFS_CRASH_HOOKS) kill the daemon with
 * SIGKILL at the step named by $VSTORFS_CRASH_AT, so tests can prove that
 * every intermediate state of a snapshot operation is recoverable. Normal
 * builds compile this to nothing.
 */
#ifndef VSTORFS_CRASH_H
#define VSTORFS_CRASH_H

#ifdef VSTORFS_CRASH_HOOKS
void crash_point(const char *step);
#else
static inline void crash_point(const char *step)
{
	(void)step;
}
#endif

#endif
