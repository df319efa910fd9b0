/* pve_config: storage.cfg parsed the way pve-storage parses it; see pve_config.h. */
#include "store/pve_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/log.h"

/* Hostile files could otherwise fill the log with one line per line. */
#define WARN_LINES_MAX 5

struct parse {
	const char *path;
	struct pve_config *c;
	struct pve_cfg_storage *cur; /* NULL: outside a section or skipping one */
	int lineno, warned, ignored;
};

bool pve_storage_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (n < 2 || !isalpha((unsigned char)id[0]) || !isalnum((unsigned char)id[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
		      (id[i] >= '0' && id[i] <= '9') || strchr("-_.", id[i])))
			return false;
	return true;
}

static void ignore(struct parse *p, const char *why)
{
	p->ignored++;
	if (p->warned++ < WARN_LINES_MAX)
		vlog(LOG_WARNING, "%s line %d: %s, ignored", p->path, p->lineno, why);
}

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* "<type>: <id>" with nothing else; type and id are cut in place. */
static bool header(char *line, char **type, char **id)
{
	char *colon = strchr(line, ':'), *e;

	if (!colon || colon == line)
		return false;
	for (char *c = line; c < colon; c++)
		if (blank(*c))
			return false;
	*colon = 0;
	*type = line;
	*id = colon + 1;
	while (blank(**id))
		(*id)++;
	e = *id + strcspn(*id, " \t");
	if (e == *id)
		return false;
	for (char *c = e; *c; c++)
		if (!blank(*c))
			return false;
	*e = 0;
	for (char *c = *type; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	return true;
}

static void storage_free(struct pve_cfg_storage *s)
{
	for (int j = 0; j < s->nprops; j++) {
		free(s->props[j].key);
		free(s->props[j].val);
	}
	free(s->props);
	free(s->type);
	free(s->id);
}

static int start_section(struct parse *p, const char *type, const char *id)
{
	const struct pve_cfg_storage *prev;
	struct pve_cfg_storage *g;

	p->cur = NULL;
	if (!pve_storage_id_valid(id)) {
		ignore(p, "not a valid storage id (section skipped)");
		return 0;
	}
	if ((prev = pve_config_find(p->c, id))) {
		/* Proxmox keeps the last one, at its place in the file. */
		int at = (int)(prev - p->c->v);

		ignore(p, "a second section of the same storage id (it replaces the first)");
		storage_free(&p->c->v[at]);
		memmove(&p->c->v[at], &p->c->v[at + 1], (size_t)(p->c->n - at - 1) * sizeof(*p->c->v));
		p->c->n--;
	}
	if (!(g = realloc(p->c->v, (size_t)(p->c->n + 1) * sizeof(*g))))
		return -ENOMEM;
	p->c->v = g;
	p->cur = &g[p->c->n];
	memset(p->cur, 0, sizeof(*p->cur));
	p->cur->type = strdup(type);
	p->cur->id = strdup(id);
	p->c->n++;
	return p->cur->type && p->cur->id ? 0 : -ENOMEM;
}

/* "\t<key>[ <value>]": Proxmox's ^\s+(\S+)(\s+(.*\S))?\s*$ */
static int add_prop(struct parse *p, char *line)
{
	struct pve_cfg_storage *s = p->cur;
	char *key = line, *val, *e;
	struct pve_cfg_prop *g;

	while (blank(*key))
		key++;
	val = key + strcspn(key, " \t");
	if (*val)
		*val++ = 0;
	while (blank(*val))
		val++;
	e = val + strlen(val);
	while (e > val && blank(e[-1]))
		*--e = 0;
	if (pve_cfg_get(s, key)) {
		ignore(p, "a repeated key");
		return 0;
	}
	if (!(g = realloc(s->props, (size_t)(s->nprops + 1) * sizeof(*g))))
		return -ENOMEM;
	s->props = g;
	g[s->nprops].key = strdup(key);
	g[s->nprops].val = strdup(*val ? val : "1");
	s->nprops++;
	return g[s->nprops - 1].key && g[s->nprops - 1].val ? 0 : -ENOMEM;
}

static int parse_line(struct parse *p, char *line, size_t len)
{
	char *type, *id, *first;

	if (len && line[len - 1] == '\n')
		line[--len] = 0;
	if (len && line[len - 1] == '\r')
		line[--len] = 0;
	if (strlen(line) != len) {
		ignore(p, "a NUL byte in the line");
		return 0;
	}
	if (!len) {
		p->cur = NULL; /* an empty line ends the section */
		return 0;
	}
	for (first = line; blank(*first); first++)
		;
	if (*first == '#')
		return 0;
	if (first == line) {
		if (header(line, &type, &id))
			return start_section(p, type, id);
		p->cur = NULL;
		ignore(p, "not a section header");
		return 0;
	}
	if (!*first)
		ignore(p, "a line of blanks");
	else if (p->cur)
		return add_prop(p, line);
	return 0;
}

static int parse_file(struct parse *p, FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = 0;

	while (!rc && (len = getline(&line, &cap, f)) >= 0) {
		p->lineno++;
		rc = parse_line(p, line, (size_t)len);
	}
	if (!rc && ferror(f))
		rc = -EIO;
	free(line);
	return rc;
}

int pve_config_load(const char *path, struct pve_config **out)
{
	struct parse p = { .path = path ? path : PVE_CONFIG_PATH };
	struct stat st;
	FILE *f;
	int rc;

	*out = NULL;
	if (!(p.c = calloc(1, sizeof(*p.c))))
		return -ENOMEM;
	if (!(f = fopen(p.path, "re"))) {
		rc = -errno;
		if (rc == -ENOENT) {
			*out = p.c;
			return 0;
		}
		free(p.c);
		return rc;
	}
	if (fstat(fileno(f), &st) < 0)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = -EINVAL;
	else if (st.st_size > PVE_CONFIG_MAX_BYTES)
		rc = -EFBIG;
	else
		rc = parse_file(&p, f);
	fclose(f);
	if (p.ignored > WARN_LINES_MAX)
		vlog(LOG_WARNING, "%s: %d lines ignored in all", p.path, p.ignored);
	if (rc < 0) {
		pve_config_free(p.c);
		return rc;
	}
	*out = p.c;
	return 0;
}

void pve_config_free(struct pve_config *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n; i++)
		storage_free(&c->v[i]);
	free(c->v);
	free(c);
}

const struct pve_cfg_storage *pve_config_find(const struct pve_config *c, const char *id)
{
	for (int i = 0; i < c->n; i++)
		if (c->v[i].id && !strcmp(c->v[i].id, id))
			return &c->v[i];
	return NULL;
}

const char *pve_cfg_get(const struct pve_cfg_storage *s, const char *key)
{
	for (int i = 0; i < s->nprops; i++)
		if (s->props[i].key && !strcmp(s->props[i].key, key))
			return s->props[i].val;
	return NULL;
}

const char *pve_cfg_str(const struct pve_cfg_storage *s, const char *key, const char *dflt)
{
	const char *v = pve_cfg_get(s, key);

	return v ? v : dflt;
}

bool pve_cfg_bool(const struct pve_cfg_storage *s, const char *key, bool dflt)
{
	static const char *const yes[] = { "1", "on", "yes", "true" };
	static const char *const no[] = { "0", "off", "no", "false" };
	const char *v = pve_cfg_get(s, key);

	if (!v)
		return dflt;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcasecmp(v, yes[i]))
			return true;
		if (!strcasecmp(v, no[i]))
			return false;
	}
	return dflt; /* Proxmox refuses the section; keep the safe default */
}

bool pve_cfg_network_type(const char *type)
{
	return !strcmp(type, "nfs") || !strcmp(type, "cifs") || !strcmp(type, "cephfs") ||
	       !strcmp(type, "glusterfs");
}

bool pve_cfg_shared(const struct pve_cfg_storage *s)
{
	return pve_cfg_network_type(s->type) || pve_cfg_bool(s, "shared", false);
}

const char *pve_cfg_path(const struct pve_cfg_storage *s, char *buf, unsigned len)
{
	const char *p = pve_cfg_get(s, "path");

	if (p)
		snprintf(buf, len, "%s", p);
	else if (pve_cfg_network_type(s->type))
		snprintf(buf, len, "/mnt/pve/%s", s->id);
	else if (len)
		buf[0] = 0;
	return buf;
}
