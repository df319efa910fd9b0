/*
 * lvm_shell: see lvm_shell.h. Framing follows lvmdbusd's lvm_shell_proxy:
 * one command line in, one JSON document out on the report fd, whose
 * shell-context status entry carries the command's result (log_ret_code 1
 * is ECMD_PROCESSED); on failure `lastlog` returns the command's whole log,
 * where its error messages are. Without a tty lvm2 prints no prompt, so a
 * complete JSON document is the end of an answer.
 *
 * Each shell's commands are serialised by its mutex (lvm_shell.h): one
 * answer at a time on its one report fd. Shells of different stores share
 * nothing but the process-wide `disabled`.
 */
#include "lvm_shell.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "lvm/lvm_cmd.h"

/* A command that holds no lock answers in milliseconds; lvm2 may wait for
 * Proxmox's VG lock. Past this the shell is taken as wedged and killed. */
#define ANSWER_TIMEOUT_MS (300 * 1000)
#define MAX_DOC (64u << 20)
#define REPORT_FD 3

struct lvm_shell {
	pthread_mutex_t lock;   /* the fields below; see the header for who takes it */
	pid_t pid;              /* 0: none running */
	int in, rep, err;       /* its stdin (socket), report fd, stderr; -1 when closed */
	int changes;            /* metadata changes sent, for the test hook */
};

/* Commands that belong to no store (the VG list for source "all", tools). */
static struct lvm_shell unowned = { PTHREAD_MUTEX_INITIALIZER, 0, -1, -1, -1, 0 };
/* Per process: VSTORFS_LVM_SHELL=0, or a shell that never started. Atomic. */
static int disabled = -1; /* -1: not decided yet */

static pthread_once_t decide_once = PTHREAD_ONCE_INIT;

static void decide(void)
{
	const char *e = getenv("VSTORFS_LVM_SHELL");

	__atomic_store_n(&disabled, e && !strcmp(e, "0"), __ATOMIC_RELAXED);
}

struct doc {
	char *p;
	size_t len, cap;
};

static void sh_close(struct lvm_shell *sh)
{
	int st;

	if (sh->pid > 0) {
		kill(sh->pid, SIGKILL);
		while (waitpid(sh->pid, &st, 0) < 0 && errno == EINTR)
			;
	}
	if (sh->in >= 0)
		close(sh->in);
	if (sh->rep >= 0)
		close(sh->rep);
	if (sh->err >= 0)
		close(sh->err);
	sh->pid = 0;
	sh->in = sh->rep = sh->err = -1;
}

/* Child side: only async-signal-safe calls. Moves fds out of the way first so
 * that dup2 never meets its own source. */
static void sh_child(int in, int rep, int err, char *const argv[], char *const envp[])
{
	int nul = open("/dev/null", O_WRONLY);

	in = fcntl(in, F_DUPFD, 10);
	rep = fcntl(rep, F_DUPFD, 10);
	err = fcntl(err, F_DUPFD, 10);
	nul = nul >= 0 ? fcntl(nul, F_DUPFD, 10) : -1;
	if (in < 0 || rep < 0 || err < 0 || nul < 0)
		_exit(127);
	dup2(in, 0);
	dup2(nul, 1);
	dup2(err, 2);
	dup2(rep, REPORT_FD);
	syscall(SYS_close_range, REPORT_FD + 1, ~0U, 0);
	lvm_cmd_exec(argv, envp);
}

static char **shell_env(char *const envp[])
{
	size_t n = 0, k = 0;

	while (envp[n])
		n++;
	char **e = calloc(n + 4, sizeof(*e));

	if (!e)
		return NULL;
	for (size_t i = 0; i < n; i++)
		/* No HOME: the shell would rewrite ~/.lvm_history after every command. */
		if (strncmp(envp[i], "HOME=", 5) && strncmp(envp[i], "LVM_REPORT_FD=", 14) &&
		    strncmp(envp[i], "LVM_COMMAND_PROFILE=", 20))
			e[k++] = envp[i];
	e[k++] = "LVM_REPORT_FD=3";
	e[k++] = "LVM_COMMAND_PROFILE=lvmdbusd";
	e[k++] = "LVM_LOG_FILE_MAX_LINES=0";
	return e;
}

static int now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int)(t.tv_sec * 1000 + t.tv_nsec / 1000000);
}

/* Read one complete JSON document from the report fd. -EIO when the shell
 * dies or times out (then it is killed and closed). */
static int read_doc(struct lvm_shell *sh, struct doc *d, struct json_object **obj)
{
	struct json_tokener *tok = json_tokener_new();
	int deadline = now_ms() + ANSWER_TIMEOUT_MS, rc = -EIO;
	char errtail[512] = "";

	if (!tok)
		return -ENOMEM;
	*obj = NULL;
	d->len = 0;
	while (!*obj) {
		struct pollfd pf[2] = { { sh->rep, POLLIN, 0 }, { sh->err, POLLIN, 0 } };
		int left = deadline - now_ms();

		if (left <= 0) {
			vlog(LOG_ERR, "lvm shell (pid %d) gave no answer in %d s: killed", (int)sh->pid,
			     ANSWER_TIMEOUT_MS / 1000);
			goto dead;
		}
		if (poll(pf, sh->err >= 0 ? 2 : 1, left) < 0) {
			if (errno == EINTR)
				continue;
			goto dead;
		}
		if (pf[1].revents) {
			char b[4096];
			ssize_t n = read(sh->err, b, sizeof(b) - 1);

			if (n > 0) {
				size_t k = (size_t)n < sizeof(errtail) ? (size_t)n : sizeof(errtail) - 1;

				memcpy(errtail, b + n - k, k);
				errtail[k] = 0;
			} else if (n == 0 || errno != EAGAIN) {
				close(sh->err);
				sh->err = -1;
			}
		}
		if (!pf[0].revents)
			continue;
		if (d->len + 65536 + 1 > d->cap) {
			size_t cap = d->cap ? d->cap * 2 : 131072;
			char *p = cap <= MAX_DOC ? realloc(d->p, cap) : NULL;

			if (!p) {
				rc = -ENOMEM;
				goto dead;
			}
			d->p = p;
			d->cap = cap;
		}
		ssize_t n = read(sh->rep, d->p + d->len, 65536);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			vlog(LOG_ERR, "lvm shell (pid %d) died%s%s", (int)sh->pid, errtail[0] ? ": " : "",
			     errtail);
			goto dead;
		}
		*obj = json_tokener_parse_ex(tok, d->p + d->len, (int)n);
		d->len += n;
		d->p[d->len] = 0;
		if (!*obj && json_tokener_get_error(tok) != json_tokener_continue) {
			vlog(LOG_ERR, "lvm shell: report is not JSON: %.200s", d->p);
			goto dead;
		}
	}
	json_tokener_free(tok);
	return 0;
dead:
	json_tokener_free(tok);
	sh_close(sh);
	return rc;
}

/* The result of the command a document answers: the last shell-context
 * status entry of its log. */
static int doc_ok(struct json_object *obj)
{
	struct json_object *log, *e, *v;
	int ok = 0;

	if (!json_object_object_get_ex(obj, "log", &log) || !json_object_is_type(log, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(log); i++) {
		e = json_object_array_get_idx(log, i);
		if (!json_object_object_get_ex(e, "log_type", &v) ||
		    strcmp(json_object_get_string(v), "status"))
			continue;
		if (!json_object_object_get_ex(e, "log_context", &v) ||
		    strcmp(json_object_get_string(v), "shell"))
			continue;
		ok = json_object_object_get_ex(e, "log_ret_code", &v) &&
		     !strcmp(json_object_get_string(v), "1");
	}
	return ok;
}

static char *doc_errors(struct json_object *obj)
{
	struct json_object *log, *e, *v;
	size_t len = 0;
	char *s = strdup("");

	if (!s || !json_object_object_get_ex(obj, "log", &log) ||
	    !json_object_is_type(log, json_type_array))
		return s;
	for (size_t i = 0; i < json_object_array_length(log); i++) {
		e = json_object_array_get_idx(log, i);
		if (!json_object_object_get_ex(e, "log_type", &v) ||
		    strcmp(json_object_get_string(v), "error") ||
		    !json_object_object_get_ex(e, "log_message", &v))
			continue;
		const char *m = json_object_get_string(v);
		size_t ml = strlen(m);
		char *p = realloc(s, len + ml + 2);

		if (!p)
			break;
		s = p;
		memcpy(s + len, m, ml);
		len += ml;
		s[len++] = '\n';
		s[len] = 0;
	}
	return s;
}

static int send_line(struct lvm_shell *sh, const char *line)
{
	size_t len = strlen(line), done = 0;

	while (done < len) {
		ssize_t n = send(sh->in, line + done, len - done, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			vlog(LOG_ERR, "lvm shell (pid %d) does not take commands: %s", (int)sh->pid,
			     strerror(errno));
			sh_close(sh);
			return -EIO;
		}
		done += n;
	}
	return 0;
}

/* One command line, quoted the way lvm2's lvm_split reads it: a word that
 * starts with a quote runs to the same quote, others to white space; no
 * escapes. -EAGAIN for an argument that cannot be written that way. */
static int format_line(const char *const full[], char **line)
{
	size_t cap = 2;

	for (int i = 1; full[i]; i++)
		cap += strlen(full[i]) + 3;
	char *s = malloc(cap), *p = s;

	if (!s)
		return -ENOMEM;
	for (int i = 1; full[i]; i++) {
		const char *a = full[i];
		int plain = *a && !strpbrk(a, " \t\r\v\f") && a[0] != '\'' && a[0] != '"' && a[0] != '#';
		char q = !strchr(a, '\'') ? '\'' : !strchr(a, '"') ? '"' : 0;

		if (strchr(a, '\n') || (!plain && !q)) {
			free(s);
			return -EAGAIN;
		}
		if (i > 1)
			*p++ = ' ';
		if (!plain)
			*p++ = q;
		memcpy(p, a, strlen(a));
		p += strlen(a);
		if (!plain)
			*p++ = q;
	}
	*p++ = '\n';
	*p = 0;
	*line = s;
	return 0;
}

/* Send a line and read its answer. */
static int exchange(struct lvm_shell *sh, const char *line, struct doc *d, struct json_object **obj)
{
	int rc = send_line(sh, line);

	return rc ? rc : read_doc(sh, d, obj);
}

static int sh_start(struct lvm_shell *sh, char *const envp[])
{
	char *argv[] = { "lvm", NULL };
	int sv[2], rp[2], ep[2];
	char **env = shell_env(envp);

	if (!env)
		return -ENOMEM;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		free(env);
		return -errno;
	}
	if (pipe2(rp, O_CLOEXEC)) {
		close(sv[0]);
		close(sv[1]);
		free(env);
		return -errno;
	}
	if (pipe2(ep, O_CLOEXEC)) {
		close(sv[0]);
		close(sv[1]);
		close(rp[0]);
		close(rp[1]);
		free(env);
		return -errno;
	}
	pid_t pid = fork();

	if (pid == 0)
		sh_child(sv[1], rp[1], ep[1], argv, env);
	int e = errno;

	free(env);
	close(sv[1]);
	close(rp[1]);
	close(ep[1]);
	if (pid < 0) {
		close(sv[0]);
		close(rp[0]);
		close(ep[0]);
		return -e;
	}
	sh->pid = pid;
	sh->in = sv[0];
	sh->rep = rp[0];
	sh->err = ep[0];
	fcntl(sh->rep, F_SETFL, O_NONBLOCK);
	fcntl(sh->err, F_SETFL, O_NONBLOCK);

	/* A missing profile or an lvm2 without its shell shows here. */
	struct doc d = { 0 };
	struct json_object *obj = NULL;
	int rc = exchange(sh, "version\n", &d, &obj);

	if (rc == 0 && !doc_ok(obj))
		rc = -EIO;
	json_object_put(obj);
	free(d.p);
	if (rc) {
		sh_close(sh);
		return rc;
	}
	vlog(LOG_INFO, "lvm shell started (pid %d)", (int)sh->pid);
	return 0;
}

#ifdef VSTORFS_CRASH_HOOKS
/*
 * Test hook: $VSTORFS_LVM_SHELL_KILL_AT = "N" kills the shell (SIGKILL, by
 * PID) before the N-th metadata change sent to this shell (so of its store) reaches it; "N+"
 * after lvm2 answered it, its answer unread: the change is committed but
 * the daemon sees the shell die, as when lvm2 dies between its commit and
 * its exit.
 */
static int kill_hook(struct lvm_shell *sh, const char *sub, int after)
{
	const char *at = getenv("VSTORFS_LVM_SHELL_KILL_AT");
	int n;

	if (!at || !*at)
		return 0;
	if (strcmp(sub, "lvcreate") && strcmp(sub, "lvchange") && strcmp(sub, "lvrename") &&
	    strcmp(sub, "lvremove"))
		return 0;
	if (!after) {
		sh->changes++;
		vlog(LOG_INFO, "lvm shell: change %d: lvm %s", sh->changes, sub);
	}
	n = atoi(at);
	if (n != sh->changes || (strchr(at, '+') != NULL) != after)
		return 0;
	vlog(LOG_WARNING, "lvm shell: killing pid %d %s change %d (%s), test hook", (int)sh->pid,
	     after ? "after" : "before", n, sub);
	kill(sh->pid, SIGKILL);
	return 1;
}
#else
static int kill_hook(struct lvm_shell *sh, const char *sub, int after)
{
	(void)sh;
	(void)sub;
	(void)after;
	return 0;
}
#endif

/* The shell exited between commands (killed, or out of memory). */
static int idle_death(struct lvm_shell *sh)
{
	int st;
	pid_t r = waitpid(sh->pid, &st, WNOHANG);

	if (r != sh->pid)
		return 0;
	vlog(LOG_WARNING, "lvm shell (pid %d) died while idle (%s %d): starting another",
	     (int)sh->pid, WIFEXITED(st) ? "exit status" : "signal",
	     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	sh->pid = 0; /* reaped */
	return 1;
}

int lvm_shell_run(struct lvm_shell *sh, const char *const full[], char *const envp[], int *ok, char **out, char **err)
{
	char *line = NULL;
	struct doc d = { 0 };
	struct json_object *obj = NULL;
	int rc;

	if (!sh)
		sh = &unowned;
	pthread_once(&decide_once, decide);
	if (__atomic_load_n(&disabled, __ATOMIC_RELAXED))
		return -EAGAIN;
	pthread_mutex_lock(&sh->lock);
	if (__atomic_load_n(&disabled, __ATOMIC_RELAXED)) {
		pthread_mutex_unlock(&sh->lock);
		return -EAGAIN;
	}
	if ((rc = format_line(full, &line)))
		goto out;
	if (sh->pid > 0 && idle_death(sh)) {
		/* Nothing was in flight: a new shell takes this command as if
		 * nothing happened. */
		sh_close(sh);
	}
	if (sh->pid <= 0 && (rc = sh_start(sh, envp))) {
		/* Never started: lvm2 without the shell or the profile. Restarts
		 * after a death are not given up on. */
		vlog(LOG_WARNING, "lvm shell cannot start (%s): running one lvm2 process per command",
		     strerror(-rc));
		__atomic_store_n(&disabled, 1, __ATOMIC_RELAXED);
		rc = -EAGAIN;
		goto out;
	}
	*ok = 0;
	*out = NULL;
	*err = NULL;
	kill_hook(sh, full[1], 0);
	rc = send_line(sh, line);
	if (rc == 0)
		rc = read_doc(sh, &d, &obj);
	if (rc == 0 && kill_hook(sh, full[1], 1)) {
		json_object_put(obj);
		obj = NULL;
		sh_close(sh);
		vlog(LOG_ERR, "lvm shell died during lvm %s", full[1]);
		rc = -EIO;
	}
	if (rc == -EIO) {
		/* Died or wedged: the command failed, as a killed lvm2 would. */
		*err = strdup("lvm shell died");
		rc = *err ? 0 : -ENOMEM;
		goto out;
	}
	if (rc)
		goto out;
	*ok = doc_ok(obj);
	if (!*ok) {
		struct doc ld = { 0 };
		struct json_object *lobj = NULL;

		if (exchange(sh, "lastlog\n", &ld, &lobj) == 0)
			*err = doc_errors(lobj);
		json_object_put(lobj);
		free(ld.p);
	}
	if (!*err)
		*err = strdup("");
	*out = d.p ? d.p : strdup("");
	d.p = NULL;
	if (!*out || !*err) {
		free(*out);
		free(*err);
		rc = -ENOMEM;
	}
out:
	json_object_put(obj);
	free(d.p);
	free(line);
	pthread_mutex_unlock(&sh->lock);
	return rc;
}

int lvm_shell_pid(struct lvm_shell *sh)
{
	if (!sh)
		sh = &unowned;
	pthread_mutex_lock(&sh->lock);
	int pid = sh->pid;

	pthread_mutex_unlock(&sh->lock);
	return pid;
}

struct lvm_shell *lvm_shell_new(void)
{
	struct lvm_shell *sh = calloc(1, sizeof(*sh));

	if (!sh)
		return NULL;
	pthread_mutex_init(&sh->lock, NULL);
	sh->in = sh->rep = sh->err = -1;
	return sh;
}

void lvm_shell_free(struct lvm_shell *sh)
{
	if (!sh)
		return;
	if (sh->pid > 0)
		vlog(LOG_DEBUG, "lvm shell (pid %d) closed with its store", (int)sh->pid);
	sh_close(sh);
	pthread_mutex_destroy(&sh->lock);
	free(sh);
}
