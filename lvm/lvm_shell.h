/*
 * lvm_shell: one long-lived `lvm` in its shell mode per daemon (and so per
 * store: a daemon mounts one), as lvm2's lvmdbusd runs it. A command costs
 * one metadata read and commit instead of a process start and lvm2's
 * initialisation (~0.1 s a command on a small guest).
 *
 * Commands are written to its stdin; its reports (and the log of each
 * command, whose status entry is the exit status) come back as one JSON
 * document per command on LVM_REPORT_FD. The lvmdbusd command profile that
 * lvm2 installs sets the JSON format and the command log, so no option is
 * needed on each command.
 */
#ifndef VSTORFS_LVM_SHELL_H
#define VSTORFS_LVM_SHELL_H

/*
 * Run one command (full[0] is "lvm", the rest as lvm_cmd_run would exec it).
 * Returns -EAGAIN when the shell cannot take it (disabled by
 * VSTORFS_LVM_SHELL=0, failed to start, an argument it cannot quote): the
 * caller then runs the command itself. Otherwise returns 0 and sets *ok
 * (the command succeeded), *out (its JSON report document, malloc'd) and
 * *err (its error messages, malloc'd, "" when none). A shell that dies or
 * does not answer in time counts as the command failing (*ok = 0), as a
 * killed lvm2 process would; it is started again for the next command.
 */
int lvm_shell_run(const char *const full[], char *const envp[], int *ok, char **out, char **err);

/* The shell's PID, 0 when none is running (for tests and logs). */
int lvm_shell_pid(void);

#endif
