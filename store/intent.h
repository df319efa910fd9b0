/*
 * intent: the one codec for the record a snapshot operation leaves before
 * its first change, so that recovery can tell what was under way.
 *
 * Two on-disk forms, both known only to intent.c:
 *   text (dir/: the file ".vstorfs-intent-<V>.op"), one line:
 *     mkdir-chain <snap> <time>
 *     rmdir-commit <snap> <S> <C>
 *     rmdir-rebase <snap> <S> <C> <backing of S or ->
 *     isnap-create <snap>
 *     isnap-delete <snap> <id>
 *   LV tag value (lvm/, after "vstorfs-mkdir=" / "vstorfs-rmdir="), in
 *   lvm2's tag charset [A-Za-z0-9_+.=:/!&#-]:
 *     mkdir:  <snap>
 *     rmdir:  commit:<C>  |  rebase:<C>:<P or ->
 * These are the forms the daemon always wrote, so a store crashed under an
 * older daemon recovers unchanged.
 *
 * The decoders trust nothing: a field that is missing, overlong, not a
 * number where one is due, holds a control character (NUL, newline) or is
 * '/', '.' or '..'-bearing where a name is due, gives -EINVAL; an unknown
 * kind gives -ENOENT. The encoders refuse (-EINVAL / -ENAMETOOLONG) what the
 * decoders would reject, so nothing written is unreadable.
 */
#ifndef VSTORFS_INTENT_H
#define VSTORFS_INTENT_H

#include <stddef.h>
#include <stdint.h>

enum intent_kind {
	INTENT_MKDIR_CHAIN,
	INTENT_RMDIR_COMMIT,
	INTENT_RMDIR_REBASE,
	INTENT_ISNAP_CREATE,
	INTENT_ISNAP_DELETE,
};

#define INTENT_NAME_MAX 255   /* snap, id, LV names */
#define INTENT_PATH_MAX 4095  /* S, C, backing */
#define INTENT_TEXT_MAX (3 * INTENT_PATH_MAX + INTENT_NAME_MAX + 64)

struct intent {
	enum intent_kind kind;
	char snap[INTENT_NAME_MAX + 1];
	char s[INTENT_PATH_MAX + 1];       /* rmdir: the layer removed (dir: path; lvm: unused) */
	char c[INTENT_PATH_MAX + 1];       /* rmdir: its child (dir: path; lvm: LV name) */
	char backing[INTENT_PATH_MAX + 1]; /* rebase: S's backing string (dir) or P's LV name (lvm); "" = none */
	char id[INTENT_NAME_MAX + 1];      /* isnap-delete: the internal snapshot's id */
	int64_t time;                      /* mkdir-chain: the snapshot's time */
};

/* Text form: the length written (without NUL), or a negative errno. */
int intent_encode(const struct intent *in, char *buf, size_t len);
/* Text form of `len` bytes (NULs inside are hostile); one trailing newline allowed. */
int intent_decode(const char *text, size_t len, struct intent *out);

/* LV tag values. mkdir: out->snap; rmdir: out->kind, c, backing (P). */
int intent_tag_encode(const struct intent *in, char *buf, size_t len);
int intent_tag_decode(const char *value, enum intent_kind mkdir_or_rmdir, struct intent *out);

const char *intent_kind_name(enum intent_kind k);

#endif
