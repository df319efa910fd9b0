/*
 * intent: encoder and decoder of snapshot-operation intents (intent.h says
 * the forms). Every field goes through one checker per field type, used by
 * both directions, so what is written is exactly what is accepted.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/check.h"
#include "store/intent.h"

enum field { F_NAME, F_PATH, F_BACKING, F_TAGNAME };

static const struct {
	const char *name;
	int nfields;           /* after the kind */
	enum field f[3];
} kinds[] = {
	[INTENT_MKDIR_CHAIN] = { "mkdir-chain", 2, { F_NAME } },
	[INTENT_RMDIR_COMMIT] = { "rmdir-commit", 3, { F_NAME, F_PATH, F_PATH } },
	[INTENT_RMDIR_REBASE] = { "rmdir-rebase", 4, { F_NAME, F_PATH, F_PATH } },
	[INTENT_ISNAP_CREATE] = { "isnap-create", 1, { F_NAME } },
	[INTENT_ISNAP_DELETE] = { "isnap-delete", 2, { F_NAME, F_NAME } },
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

const char *intent_kind_name(enum intent_kind k)
{
	return (size_t)k < NKINDS ? kinds[k].name : "?";
}

/* lvm2's tag charset (lvm(8) "Tags"); LV names use a subset of it. */
static bool tag_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       strchr("_+.-/=!:&#", ch);
}

/* Is `v` (length n) acceptable as a field of type f? */
static bool field_ok(enum field f, const char *v, size_t n)
{
	size_t max = f == F_NAME || f == F_TAGNAME ? INTENT_NAME_MAX : INTENT_PATH_MAX;

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)v[i];

		if (ch <= ' ' || ch == 0x7f)
			return false;
		if ((f == F_NAME || f == F_TAGNAME) && ch == '/')
			return false;
		if (f == F_TAGNAME && (!tag_char((char)ch) || ch == ':'))
			return false;
	}
	if (f == F_NAME || f == F_TAGNAME)
		return !(n == 1 && v[0] == '.') && !(n == 2 && !memcmp(v, "..", 2));
	if (f == F_PATH) {  /* relative to the store's root, never climbing out of it */
		if (v[0] == '/')
			return false;
		for (size_t i = 0; i < n;) {
			size_t e = i;

			while (e < n && v[e] != '/')
				e++;
			if (e == i || (e - i == 2 && !memcmp(v + i, "..", 2)) || (e - i == 1 && v[i] == '.'))
				return false;
			i = e + 1;
		}
	}
	return true;
}

/* A field held in a struct intent (NUL-terminated within its array of `cap`). */
static bool str_ok_n(enum field f, const char *v, size_t cap)
{
	return field_ok(f, v, strnlen(v, cap));
}
#define str_ok(f, field) str_ok_n(f, field, sizeof(field))

int intent_encode(const struct intent *in, char *buf, size_t len)
{
	int n;

	if ((size_t)in->kind >= NKINDS || !str_ok(F_NAME, in->snap))
		return -EINVAL;
	switch (in->kind) {
	case INTENT_MKDIR_CHAIN:
		n = snprintf(buf, len, "%s %s %lld\n", kinds[in->kind].name, in->snap, (long long)in->time);
		break;
	case INTENT_RMDIR_COMMIT:
	case INTENT_RMDIR_REBASE:
		if (!str_ok(F_PATH, in->s) || !str_ok(F_PATH, in->c) ||
		    (in->backing[0] && !str_ok(F_BACKING, in->backing)) ||
		    (in->kind == INTENT_RMDIR_REBASE && !strcmp(in->backing, "-")))
			return -EINVAL;
		if (in->kind == INTENT_RMDIR_COMMIT)
			n = snprintf(buf, len, "%s %s %s %s\n", kinds[in->kind].name, in->snap, in->s, in->c);
		else
			n = snprintf(buf, len, "%s %s %s %s %s\n", kinds[in->kind].name, in->snap, in->s, in->c,
				     in->backing[0] ? in->backing : "-");
		break;
	case INTENT_ISNAP_CREATE:
		n = snprintf(buf, len, "%s %s\n", kinds[in->kind].name, in->snap);
		break;
	case INTENT_ISNAP_DELETE:
		if (!str_ok(F_NAME, in->id))
			return -EINVAL;
		n = snprintf(buf, len, "%s %s %s\n", kinds[in->kind].name, in->snap, in->id);
		break;
	default:
		return -EINVAL;
	}
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return n;
}

/* Copy field v (length n) of type f into dst (size cap), checked. */
static int take(enum field f, const char *v, size_t n, char *dst, size_t cap)
{
	if (!field_ok(f, v, n) || n >= cap)
		return -EINVAL;
	memcpy(dst, v, n);
	dst[n] = 0;
	return 0;
}

static int parse_time(const char *v, size_t n, int64_t *t)
{
	char num[24], *end;
	long long x;

	if (n == 0 || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, v, n);
	num[n] = 0;
	if (!((num[0] >= '0' && num[0] <= '9') || (num[0] == '-' && n > 1)))
		return -EINVAL;
	errno = 0;
	x = strtoll(num, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*t = x;
	return 0;
}

int intent_decode(const char *text, size_t len, struct intent *out)
{
	const char *f[6];
	size_t fl[6];
	int nf = 0;
	size_t k;

	memset(out, 0, sizeof(*out));
	if (len > INTENT_TEXT_MAX || memchr(text, 0, len))
		return -EINVAL;
	if (len && text[len - 1] == '\n')
		len--;
	/* fields are separated by exactly one space; anything else is hostile */
	for (size_t i = 0; i <= len;) {
		size_t e = i;

		while (e < len && text[e] != ' ')
			e++;
		if (nf == 6)
			return -EINVAL;
		f[nf] = text + i;
		fl[nf++] = e - i;
		i = e + 1;
	}
	for (k = 0; k < NKINDS; k++)
		if (fl[0] == strlen(kinds[k].name) && !memcmp(f[0], kinds[k].name, fl[0]))
			break;
	if (k == NKINDS)  /* a word that could be a newer daemon's kind, or garbage */
		return fl[0] && fl[0] <= 32 && strspn(f[0], "abcdefghijklmnopqrstuvwxyz-") >= fl[0] ? -ENOENT
										    : -EINVAL;
	if (nf != 1 + kinds[k].nfields)
		return -EINVAL;
	out->kind = (enum intent_kind)k;
	if (take(F_NAME, f[1], fl[1], out->snap, sizeof(out->snap)))
		return -EINVAL;
	switch (out->kind) {
	case INTENT_MKDIR_CHAIN:
		return parse_time(f[2], fl[2], &out->time);
	case INTENT_RMDIR_COMMIT:
	case INTENT_RMDIR_REBASE:
		if (take(F_PATH, f[2], fl[2], out->s, sizeof(out->s)) ||
		    take(F_PATH, f[3], fl[3], out->c, sizeof(out->c)))
			return -EINVAL;
		if (out->kind == INTENT_RMDIR_REBASE && !(fl[4] == 1 && f[4][0] == '-'))
			return take(F_BACKING, f[4], fl[4], out->backing, sizeof(out->backing));
		return 0;
	case INTENT_ISNAP_CREATE:
		return 0;
	case INTENT_ISNAP_DELETE:
		return take(F_NAME, f[2], fl[2], out->id, sizeof(out->id));
	}
	return -EINVAL;
}

int intent_tag_encode(const struct intent *in, char *buf, size_t len)
{
	int n;

	switch (in->kind) {
	case INTENT_MKDIR_CHAIN:
		if (!str_ok(F_TAGNAME, in->snap))
			return -EINVAL;
		n = snprintf(buf, len, "%s", in->snap);
		break;
	case INTENT_RMDIR_COMMIT:
		if (!str_ok(F_TAGNAME, in->c))
			return -EINVAL;
		n = snprintf(buf, len, "commit:%s", in->c);
		break;
	case INTENT_RMDIR_REBASE:
		if (!str_ok(F_TAGNAME, in->c) || (in->backing[0] && !str_ok(F_TAGNAME, in->backing)) ||
		    !strcmp(in->backing, "-"))
			return -EINVAL;
		n = snprintf(buf, len, "rebase:%s:%s", in->c, in->backing[0] ? in->backing : "-");
		break;
	default:
		return -EINVAL;
	}
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return n;
}

int intent_tag_decode(const char *value, enum intent_kind mkdir_or_rmdir, struct intent *out)
{
	size_t n = strnlen(value, 2 * INTENT_NAME_MAX + 16);
	const char *rest, *colon;

	memset(out, 0, sizeof(*out));
	if (mkdir_or_rmdir == INTENT_MKDIR_CHAIN) {
		out->kind = INTENT_MKDIR_CHAIN;
		return take(F_TAGNAME, value, n, out->snap, sizeof(out->snap));
	}
	if (!strncmp(value, "commit:", 7)) {
		out->kind = INTENT_RMDIR_COMMIT;
		return take(F_TAGNAME, value + 7, n - 7, out->c, sizeof(out->c));
	}
	if (strncmp(value, "rebase:", 7))
		return -EINVAL;
	out->kind = INTENT_RMDIR_REBASE;
	rest = value + 7;
	colon = memchr(rest, ':', n - 7);
	if (!colon || take(F_TAGNAME, rest, (size_t)(colon - rest), out->c, sizeof(out->c)))
		return -EINVAL;
	if (!strcmp(colon + 1, "-"))
		return 0;
	return take(F_TAGNAME, colon + 1, n - (size_t)(colon + 1 - value), out->backing, sizeof(out->backing));
}
