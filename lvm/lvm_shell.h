/*
 * lvm_shell: one long-lived `lvm` in its shell mode per LVM store, as
 * lvm2's lvmdbusd runs it. A command costs one metadata read and commit
 * instead of a process start and lvm2's initialisation (~0.1 s a command
 * on a small guest). One per store, not per daemon, so that a long command
 * on one VG never delays another store's: a daemon serves several VGs, and
 * their operations run concurrently (fs/catalog.h).
 *
 * Lock: a shell's own mutex serialises its commands. A store's shell is
 * used only under that store's op lock (fs/catalog.h, lock 1), so the
 * mutex is uncontended there and taken below every fs/ lock; it guards
 * the process for lvm_shell_pid and for the shell of no store.
 *
 * Commands are written to its stdin; its reports (and the log of each
 * command, whose status entry is the exit status) come back as one JSON
 * document per command on LVM_REPORT_FD. The lvmdbusd command profile that
 * lvm2 installs sets the JSON format and the command log, so no option is
 * needed on each command.
 */
#ifndef VSTORFS_LVM_SHELL_H
#define VSTORFS_LVM_SHELL_H

struct lvm_shell;

/* A shell with no process yet: it starts at its first command. NULL: no memory. */
struct lvm_shell *lvm_shell_new(void);
/* Kill and reap its process (if any) and free it; NULL is ignored. */
void lvm_shell_free(struct lvm_shell *sh);

/*
 * Run one command on sh (NULL: the process-wide shell of commands that
 * belong to no store; full[0] is "lvm", the rest as lvm_cmd_run would exec it).
 * Returns -EAGAIN when the shell cannot take it (disabled by
 * VSTORFS_LVM_SHELL=0, failed to start, an argument it cannot quote): the
 * caller then runs the command itself. Otherwise returns 0 and sets *ok
 * (the command succeeded), *out (its JSON report document, malloc'd) and
 * *err (its error messages, malloc'd, "" when none). A shell that dies or
 * does not answer in time counts as the command failing (*ok = 0), as a
 * killed lvm2 process would; it is started again for the next command.
 * VSTORFS_LVM_SHELL=0, and a first start that fails, turn every shell of
 * the process off.
 */
int lvm_shell_run(struct lvm_shell *sh, const char *const full[], char *const envp[], int *ok,
		  char **out, char **err);

/* sh's PID (NULL: the shell of no store), 0 when none is running (for tests and logs). */
int lvm_shell_pid(struct lvm_shell *sh);

#endif
