/*
 * vg: scanning one VG into an immutable, reference-counted struct lvm_vg
 * from one `lvm fullreport` (its vg, pv and seg subreports). One command
 * is one consistent read of the metadata, and costs one lvm2 start-up
 * instead of three.
 *
 * Everything lvm2 prints is checked: numbers must parse whole, PE ranges
 * must name a PV of the VG and lie inside it; an LV that fails any check,
 * or has a non-linear segment, is kept but marked unreadable.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "lvm/lvm.h"
#include "lvm/lvm_cmd.h"

/* The rows of report `kind` ("vg", "pv", "lv") in lvm2's JSON output. */
static struct json_object *report_rows(struct json_object *root, const char *kind)
{
	struct json_object *rep, *first, *rows;

	if (!json_object_object_get_ex(root, "report", &rep) ||
	    !json_object_is_type(rep, json_type_array) || json_object_array_length(rep) < 1)
		return NULL;
	first = json_object_array_get_idx(rep, 0);
	if (!json_object_object_get_ex(first, kind, &rows) || !json_object_is_type(rows, json_type_array))
		return NULL;
	return rows;
}

static const char *field(struct json_object *row, const char *name)
{
	struct json_object *v;

	if (!json_object_object_get_ex(row, name, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int num(struct json_object *row, const char *name, uint64_t *out)
{
	const char *s = field(row, name);
	char *end;

	if (!s || !*s || *s == '-')
		return -EIO;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || *end ? -EIO : 0;
}

static int run_json(const struct lvm_opts *o, const char *const argv[], struct json_object **root)
{
	char *out = NULL;
	int rc = lvm_cmd_run(o, argv, &out);

	if (rc)
		return rc;
	*root = json_tokener_parse(out);
	free(out);
	if (!*root) {
		vlog(LOG_ERR, "lvm %s: output is not JSON", argv[0]);
		return -EIO;
	}
	return 0;
}

static int report(const struct lvm_opts *o, const char *const argv[], const char *kind,
		  struct json_object **root, struct json_object **rows)
{
	int rc = run_json(o, argv, root);

	if (rc)
		return rc;
	*rows = report_rows(*root, kind);
	if (!*rows) {
		vlog(LOG_ERR, "lvm %s: no %s report in its output", argv[0], kind);
		json_object_put(*root);
		return -EIO;
	}
	return 0;
}

void lvm_free_names(char **names)
{
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}

int lvm_list_vgs(const struct lvm_opts *o, char ***names)
{
	const char *argv[] = { "vgs", "--reportformat", "json", "-o", "vg_name", NULL };
	struct json_object *root, *rows;
	int rc = report(o, argv, "vg", &root, &rows);
	size_t n;

	if (rc)
		return rc;
	n = json_object_array_length(rows);
	*names = calloc(n + 1, sizeof(**names));
	for (size_t i = 0; *names && i < n; i++) {
		const char *name = field(json_object_array_get_idx(rows, i), "vg_name");

		(*names)[i] = strdup(name ? name : "");
	}
	json_object_put(root);
	return *names ? 0 : -ENOMEM;
}

int lvm_vg_seqno(const struct lvm_opts *o, const char *vg, uint64_t *seqno)
{
	const char *argv[] = { "vgs", "--reportformat", "json", "-o", "vg_seqno", vg, NULL };
	struct json_object *root, *rows;
	int rc = report(o, argv, "vg", &root, &rows);

	if (rc)
		return rc;
	rc = json_object_array_length(rows) == 1
		     ? num(json_object_array_get_idx(rows, 0), "vg_seqno", seqno)
		     : -ENOENT;
	json_object_put(root);
	return rc;
}

void lvm_vg_get(struct lvm_vg *vg)
{
	__atomic_add_fetch(&vg->refs, 1, __ATOMIC_RELAXED);
}

static void vg_free(struct lvm_vg *vg)
{
	for (int i = 0; i < vg->npvs; i++) {
		if (vg->pvs[i].fd >= 0)
			close(vg->pvs[i].fd);
		free(vg->pvs[i].path);
	}
	for (int i = 0; i < vg->nlvs; i++) {
		struct lvm_lv *lv = &vg->lvs[i];

		free(lv->name);
		free(lv->uuid);
		for (int t = 0; lv->tags && lv->tags[t]; t++)
			free(lv->tags[t]);
		free(lv->tags);
		free(lv->segs);
	}
	free(vg->pvs);
	free(vg->lvs);
	free(vg->name);
	free(vg->uuid);
	free(vg->lock_type);
	free(vg);
}

void lvm_vg_put(struct lvm_vg *vg)
{
	if (vg && __atomic_sub_fetch(&vg->refs, 1, __ATOMIC_ACQ_REL) == 0)
		vg_free(vg);
}

const struct lvm_lv *lvm_vg_find_lv(const struct lvm_vg *vg, const char *name)
{
	for (int i = 0; i < vg->nlvs; i++)
		if (!strcmp(vg->lvs[i].name, name))
			return &vg->lvs[i];
	return NULL;
}

bool lvm_lv_has_tag(const struct lvm_lv *lv, const char *tag)
{
	for (int i = 0; lv->tags && lv->tags[i]; i++)
		if (!strcmp(lv->tags[i], tag))
			return true;
	return false;
}

static int scan_vg_row(struct json_object *rows, struct lvm_vg *vg)
{
	struct json_object *row;
	const char *uuid, *lock;

	if (json_object_array_length(rows) != 1)
		return -ENOENT;
	row = json_object_array_get_idx(rows, 0);
	uuid = field(row, "vg_uuid");
	lock = field(row, "vg_lock_type");
	vg->uuid = strdup(uuid ? uuid : "");
	vg->lock_type = strdup(lock ? lock : "");
	if (!vg->uuid || !vg->lock_type)
		return -ENOMEM;
	if (num(row, "vg_seqno", &vg->seqno) || num(row, "vg_extent_size", &vg->extent_size) ||
	    vg->extent_size == 0)
		return -EIO;
	if (num(row, "vg_size", &vg->size) || num(row, "vg_free", &vg->free_bytes))
		vg->size = vg->free_bytes = 0; /* only statfs wants them */
	return 0;
}

static int scan_pvs(struct json_object *rows, struct lvm_vg *vg)
{
	size_t n = json_object_array_length(rows);

	vg->pvs = calloc(n + 1, sizeof(*vg->pvs));
	for (size_t i = 0; vg->pvs && i < n; i++) {
		struct json_object *row = json_object_array_get_idx(rows, i);
		const char *name = field(row, "pv_name"), *vgn = field(row, "vg_name");
		struct lvm_pv *pv = &vg->pvs[vg->npvs];

		if (!name || !vgn || strcmp(vgn, vg->name))
			continue;
		pv->path = strdup(name);
		pv->fd = -1;
		if (!pv->path || num(row, "pe_start", &pv->pe_start))
			continue;
		pv->fd = open(name, O_RDONLY | O_CLOEXEC);
		if (pv->fd < 0)
			vlog(LOG_WARNING, "%s: cannot open PV %s: %s", vg->name, name, strerror(errno));
		vg->npvs++;
	}
	return vg->pvs ? 0 : -ENOMEM;
}

static int pv_index(const struct lvm_vg *vg, const char *path, size_t len)
{
	for (int i = 0; i < vg->npvs; i++)
		if (strlen(vg->pvs[i].path) == len && !strncmp(vg->pvs[i].path, path, len))
			return i;
	return -1;
}

/* "/dev/loop0:0-4" (inclusive extent range) -> segment in bytes; false if unusable. */
static bool parse_pe_range(const struct lvm_vg *vg, const char *r, uint64_t seg_start,
			   uint64_t seg_size, struct lvm_segment *s)
{
	const char *colon = r ? strrchr(r, ':') : NULL;
	unsigned long long a, b;
	char tail;

	if (!colon || strchr(r, ' ') || sscanf(colon + 1, "%llu-%llu%c", &a, &b, &tail) != 2 || b < a)
		return false;
	s->pv = pv_index(vg, r, colon - r);
	if (s->pv < 0 || vg->pvs[s->pv].fd < 0)
		return false;
	s->lv_off = seg_start;
	s->len = seg_size;
	s->pv_off = vg->pvs[s->pv].pe_start + a * vg->extent_size;
	return (b - a + 1) * vg->extent_size == seg_size;
}

static char **split_tags(const char *s)
{
	size_t n = 1;
	char **v, *copy, *save = NULL;
	int i = 0;

	for (const char *p = s; p && *p; p++)
		n += *p == ',';
	v = calloc(n + 1, sizeof(*v));
	copy = strdup(s ? s : "");
	if (!v || !copy) {
		free(v);
		free(copy);
		return NULL;
	}
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		v[i++] = strdup(t);
	free(copy);
	return v;
}

static struct lvm_lv *lv_for_row(struct lvm_vg *vg, struct json_object *row)
{
	const char *name = field(row, "lv_name"), *uuid = field(row, "lv_uuid");
	struct lvm_lv *lv;
	uint64_t t;

	if (!name || !uuid || name[0] == '[')
		return NULL; /* hidden/internal LVs are never volumes */
	for (int i = vg->nlvs - 1; i >= 0; i--)
		if (!strcmp(vg->lvs[i].uuid ? vg->lvs[i].uuid : "", uuid))
			return &vg->lvs[i];
	lv = &vg->lvs[vg->nlvs++];
	lv->name = strdup(name);
	lv->uuid = strdup(uuid);
	lv->tags = split_tags(field(row, "lv_tags"));
	lv->readable = lv->name && lv->uuid && lv->tags;
	if (num(row, "lv_size", &lv->size))
		lv->readable = false;
	if (num(row, "lv_time", &t) == 0)
		lv->ctime = t;
	return lv;
}

static int seg_cmp(const void *a, const void *b)
{
	const struct lvm_segment *x = a, *y = b;

	return x->lv_off < y->lv_off ? -1 : x->lv_off > y->lv_off;
}

static int scan_lvs(struct json_object *rows, struct lvm_vg *vg)
{
	size_t n;

	n = json_object_array_length(rows);
	vg->lvs = calloc(n + 1, sizeof(*vg->lvs));
	for (size_t i = 0; vg->lvs && i < n; i++) {
		struct json_object *row = json_object_array_get_idx(rows, i);
		struct lvm_lv *lv = lv_for_row(vg, row);
		const char *type = field(row, "segtype");
		struct lvm_segment s;
		uint64_t start, size;

		if (!lv)
			continue;
		struct lvm_segment *grown = realloc(lv->segs, (lv->nsegs + 1) * sizeof(*grown));

		if (!grown) {
			lv->readable = false;
			continue;
		}
		lv->segs = grown;
		if (!type || strcmp(type, "linear") || num(row, "seg_start", &start) ||
		    num(row, "seg_size", &size) ||
		    !parse_pe_range(vg, field(row, "seg_pe_ranges"), start, size, &s)) {
			lv->readable = false;
			continue;
		}
		lv->segs[lv->nsegs++] = s;
	}
	if (!vg->lvs)
		return -ENOMEM;
	/* Segments must tile the LV exactly. */
	for (int i = 0; i < vg->nlvs; i++) {
		struct lvm_lv *lv = &vg->lvs[i];
		uint64_t end = 0;

		qsort(lv->segs, lv->nsegs, sizeof(*lv->segs), seg_cmp);

		for (int j = 0; j < lv->nsegs && lv->readable; j++) {
			lv->readable = lv->segs[j].lv_off == end;
			end += lv->segs[j].len;
		}
		if (end != lv->size)
			lv->readable = false;
	}
	return 0;
}

int lvm_vg_scan(const struct lvm_opts *o, const char *name, struct lvm_vg **out)
{
	const char *argv[] = {
		"fullreport", "--reportformat", "json", "--units", "b", "--nosuffix",
		"--config", "report/time_format=\"%s\"",
		"--configreport", "vg", "-o", "vg_name,vg_uuid,vg_seqno,vg_extent_size,vg_lock_type,vg_size,vg_free",
		"--configreport", "pv", "-o", "pv_name,pe_start,vg_name",
		"--configreport", "lv", "-o", "lv_name",
		"--configreport", "pvseg", "-o", "pvseg_start",
		"--configreport", "seg", "-o",
		"lv_name,lv_uuid,lv_tags,lv_size,lv_time,segtype,seg_start,seg_size,seg_pe_ranges",
		name, NULL
	};
	struct json_object *root = NULL, *vgs, *pvs, *segs;
	struct lvm_vg *vg = calloc(1, sizeof(*vg));
	int rc;

	if (!vg || !(vg->name = strdup(name))) {
		free(vg);
		return -ENOMEM;
	}
	vg->refs = 1;
	rc = run_json(o, argv, &root);
	if (!rc) {
		vgs = report_rows(root, "vg");
		pvs = report_rows(root, "pv");
		segs = report_rows(root, "seg");
		if (!vgs)
			rc = json_object_object_get_ex(root, "report", NULL) ? -ENOENT : -EIO;
		else if (!pvs || !segs)
			rc = -EIO;
		if (rc == -EIO)
			vlog(LOG_ERR, "%s: lvm fullreport: unexpected output", name);
	}
	if (!rc)
		rc = scan_vg_row(vgs, vg);
	if (!rc)
		rc = scan_pvs(pvs, vg);
	if (!rc)
		rc = scan_lvs(segs, vg);
	json_object_put(root);
	if (rc) {
		vg_free(vg);
		return rc;
	}
	*out = vg;
	return 0;
}
