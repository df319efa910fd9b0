/*
 * lvm_cmd: a command goes to its store's lvm shell (lvm_shell.c) when it runs, else
 * fork/execvp of lvm2 with stdout and stderr captured through pipes. Bounded output (64 MiB); the child gets a clean fd table and
 * LVM_SUPPRESS_FD_WARNINGS so lvm2 does not complain about our fds.
 */
#include "lvm_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "lvm/dm_busy.h"
#include "lvm/lvm_shell.h"

#define MAX_OUT (64u << 20)
#define MAX_ARGS 64

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_read(int fd, struct buf *b)
{
	char tmp[65536];
	ssize_t n = read(fd, tmp, sizeof(tmp));

	if (n <= 0)
		return n < 0 && errno == EINTR ? 1 : 0;
	if (b->len + n + 1 > MAX_OUT)
		return 1; /* drop the excess, keep draining */
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *p = realloc(b->p, cap);

		if (!p)
			return 1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, tmp, n);
	b->len += n;
	b->p[b->len] = 0;
	return 1;
}

/*
 * lvm2 sets up a Linux AIO context for its metadata reads, and io_destroy()
 * at exit waits for an RCU grace period: 35 ms of a 40 ms `lvm vgs` here,
 * paid by every command. use_aio=0 cannot be passed with --config (it is
 * read before the command line is), but when io_setup() fails lvm2 falls
 * back to its synchronous engine by design ("Failed to set up async io,
 * using sync io."). So the child gets a seccomp filter that answers
 * io_setup() with ENOSYS and allows everything else.
 */
#if defined(__x86_64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

static void refuse_aio(void)
{
#ifdef NATIVE_AUDIT_ARCH
	static struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	/* Without CAP_SYS_ADMIN this fails (EACCES): lvm2 then just uses AIO. */
	syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
#endif
}

/* Between fork and exec only async-signal-safe calls: other threads may hold malloc's lock. */
void lvm_cmd_exec(char *const argv[], char *const envp[])
{
	refuse_aio();
	signal(SIGPIPE, SIG_DFL);
	/* mount(8) may run us with a PATH that lacks /sbin. */
	execve("/sbin/lvm", argv, envp);
	execve("/usr/sbin/lvm", argv, envp);
	execvpe("lvm", argv, envp);
	_exit(127);
}

static void child(int outfd, int errfd, char *const argv[], char *const envp[])
{
	dup2(outfd, 1);
	dup2(errfd, 2);
	int nul = open("/dev/null", O_RDONLY);

	if (nul >= 0)
		dup2(nul, 0);
	syscall(SYS_close_range, 3, ~0U, 0);
	lvm_cmd_exec(argv, envp);
}

/* fork+exec of one lvm2 command: stdout into *out, stderr into *err. */
static int run_forked(const char *const full[], char *const envp[], int *ok, char **out,
		      char **err, char *why, size_t whylen)
{
	struct buf ob = { 0 }, eb = { 0 };
	int po[2], pe[2], status;
	pid_t pid;

	if (pipe2(po, O_CLOEXEC))
		return -errno;
	if (pipe2(pe, O_CLOEXEC)) {
		int e = errno;

		close(po[0]);
		close(po[1]);
		return -e;
	}
	pid = fork();
	if (pid == 0)
		child(po[1], pe[1], (char *const *)full, envp);
	int fork_errno = errno;

	close(po[1]);
	close(pe[1]);
	if (pid < 0) {
		close(po[0]);
		close(pe[0]);
		return -fork_errno;
	}
	struct pollfd pf[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
	int open_fds = 2;

	while (open_fds) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (pf[i].fd >= 0 && pf[i].revents) {
				if (!buf_read(pf[i].fd, i ? &eb : &ob)) {
					close(pf[i].fd);
					pf[i].fd = -1;
					open_fds--;
				}
			}
		}
	}
	for (int i = 0; i < 2; i++)
		if (pf[i].fd >= 0)
			close(pf[i].fd);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	*ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	snprintf(why, whylen, "%s %d", WIFEXITED(status) ? "exit status" : "signal",
		 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	*out = ob.p;
	*err = eb.p;
	return 0;
}

/* Append s to the config string at *p (cap bytes left); 0 when it does not fit. */
static int put(char **p, size_t *left, const char *s)
{
	size_t n = strlen(s);

	if (n >= *left)
		return 0;
	memcpy(*p, s, n + 1);
	*p += n;
	*left -= n;
	return 1;
}

/*
 * The argument vector for the shell, in sh[], from the one lvm_cmd_run would
 * exec. Two things differ, both for lvm2 2.03.16's shell:
 *  - no --reportformat: the shell's profile makes every report JSON, and a
 *    --reportformat of a command's own crashes the shell;
 *  - no --devices: from the second command on, the shell crashes in
 *    device_ids_match_device_list() on the list the first one left. The same
 *    restriction is written as a filter, with the devices file off as
 *    --devices implies, merged into the command's one --config (lvm2 refuses
 *    a repeated --config).
 * Returns the malloc'd config string sh[] points into, or NULL when the
 * command must be forked (a device path the filter cannot express).
 */
static char *shell_argv(const struct lvm_opts *o, const char *const full[], const char *sh[])
{
	size_t cap = 8192, left = cap;
	char *cfg = malloc(cap), *p = cfg;
	int m = 0, has_cfg = 0;

	if (!cfg)
		return NULL;
	*p = 0;
	for (int i = 0; full[i]; i++) {
		if (!strcmp(full[i], "--reportformat") && full[i + 1]) {
			i++;
		} else if (!strcmp(full[i], "--devices") && full[i + 1]) {
			i++;
		} else if (!strcmp(full[i], "--config") && full[i + 1]) {
			if ((has_cfg && !put(&p, &left, " ")) || !put(&p, &left, full[++i]))
				goto fork;
			has_cfg = 1;
		} else {
			sh[m++] = full[i];
		}
	}
	if (o && o->devices && o->devices[0]) {
		if ((has_cfg && !put(&p, &left, " ")) ||
		    !put(&p, &left, "devices{use_devicesfile=0 filter=["))
			goto fork;
		for (int i = 0; o->devices[i]; i++) {
			if (!put(&p, &left, "\"a|^"))
				goto fork;
			for (const char *c = o->devices[i]; *c; c++) {
				char one[2] = { *c, 0 };

				if (*c == '.' || *c == '+') {
					if (!put(&p, &left, *c == '.' ? "[.]" : "[+]"))
						goto fork;
				} else if (!strchr("/_-:", *c) && !(*c >= '0' && *c <= '9') &&
					   !(*c >= 'a' && *c <= 'z') && !(*c >= 'A' && *c <= 'Z')) {
					goto fork;
				} else if (!put(&p, &left, one)) {
					goto fork;
				}
			}
			if (!put(&p, &left, "$|\","))
				goto fork;
		}
		if (!put(&p, &left, "\"r|.*|\"]}"))
			goto fork;
		has_cfg = 1;
	}
	if (has_cfg) {
		/* After the subcommand, as lvm2 wants options. */
		memmove(sh + 4, sh + 2, (m - 2) * sizeof(*sh));
		sh[2] = "--config";
		sh[3] = cfg;
		m += 2;
	}
	sh[m] = NULL;
	return cfg;
fork:
	free(cfg);
	return NULL;
}

int lvm_cmd_run(const struct lvm_opts *o, const char *const argv[], char **out)
{
	const char *full[MAX_ARGS + 8];
	char devices[4096] = "";
	char *ob = NULL, *eb = NULL;
	int n = 0, rc;

	full[n++] = "lvm";
	full[n++] = argv[0];
	if (!dm_present()) {
		full[n++] = "--driverloaded";
		full[n++] = "n";
	}
	if (o && o->devices && o->devices[0]) {
		size_t used = 0;

		for (int i = 0; o->devices[i]; i++)
			used += snprintf(devices + used, used < sizeof(devices) ? sizeof(devices) - used : 0,
					 "%s%s", i ? "," : "", o->devices[i]);
		if (used >= sizeof(devices))
			return -E2BIG;
		full[n++] = "--devices";
		full[n++] = devices;
	}
	for (int i = 1; argv[i]; i++) {
		if (n >= MAX_ARGS + 6)
			return -E2BIG;
		full[n++] = argv[i];
	}
	full[n] = NULL;
	extern char **environ;
	size_t nenv = 0;

	while (environ[nenv])
		nenv++;
	char **envp = calloc(nenv + 3, sizeof(*envp));
	size_t k = 0;

	if (!envp)
		return -ENOMEM;
	/* lvm2's messages are matched below: they must be the untranslated ones. */
	for (size_t i = 0; i < nenv; i++)
		if (strncmp(environ[i], "LC_ALL=", 7) && strncmp(environ[i], "LANGUAGE=", 9))
			envp[k++] = environ[i];
	envp[k++] = "LC_ALL=C";
	envp[k++] = "LVM_SUPPRESS_FD_WARNINGS=1";
	const char *sh[MAX_ARGS + 8];
	char *shcfg = shell_argv(o, full, sh);
	char why[64] = "shell";
	int ok = 0;

	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = shcfg ? lvm_shell_run(o ? o->shell : NULL, sh, envp, &ok, &ob, &eb) : -EAGAIN;
	free(shcfg);
	if (rc == -EAGAIN)
		rc = run_forked(full, envp, &ok, &ob, &eb, why, sizeof(why));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	vlog(LOG_DEBUG, "lvm %s: %.1f ms (%s)", argv[0],
	     (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6,
	     strcmp(why, "shell") ? "fork" : "shell");
	free(envp);
	if (rc)
		return rc;
	rc = ok ? 0 : -EIO;
	if (rc) {
		const char *err = eb ? eb : "";

		if (strstr(err, "not found") || strstr(err, "Cannot process volume group"))
			rc = -ENOENT;
		else if (strstr(err, "insufficient free space"))
			rc = -ENOSPC;
		if (rc != -ENOENT)
			vlog(LOG_ERR, "lvm %s failed (%s): %s", argv[0], why, err);
	}
	free(eb);
	if (out && rc == 0) {
		*out = ob ? ob : strdup("");
		return *out ? 0 : -ENOMEM;
	}
	free(ob);
	return rc;
}
