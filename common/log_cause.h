/*
 * log_cause: one log line per fault, per subject, per cause. A subject
 * (a view, a layer) that keeps failing for the same reason is logged once;
 * it is logged again only when the reason changes or after it recovered
 * (log_cause_clear). Process-wide, bounded: past LOG_CAUSE_MAX subjects the
 * oldest are forgotten (and may be logged once more).
 */
#ifndef VSTORFS_LOG_CAUSE_H
#define VSTORFS_LOG_CAUSE_H

#include <stdbool.h>

#define LOG_CAUSE_MAX 8192

/* True when `subject` was not known to fail for `cause` (it is now): log then. */
bool log_cause_new(const char *subject, const char *cause);
/* The subject works again: its next fault is logged whatever the cause. */
void log_cause_clear(const char *subject);

#endif
