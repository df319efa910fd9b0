/*
 * pve_config: Proxmox VE's /etc/pve/storage.cfg, parsed once, as
 * pve-storage's SectionConfig parse_config reads it, for every caller
 * (pve: SOURCEs, the LVM store's lock, a directory store's settings).
 *
 * The rules followed (PVE/SectionConfig.pm, PVE/Storage/Plugin.pm):
 *  - a section starts with "<type>: <storeid>" at column 0; the type is
 *    lower-cased, the id must be a pve-storage-id
 *    (^[a-z][a-z0-9._-]*[a-z0-9]$, any case), else the section is ignored;
 *  - its properties are indented (tab or space) "<key>[ <value>]" lines;
 *    a key without value is a boolean set ("shared", "disable");
 *  - a line whose first non-blank is '#' is a comment, anywhere;
 *  - an empty line ends a section; lines that fit no rule are ignored
 *    with a warning; a second section of the same id replaces the first
 *    (Proxmox's $ids->{$id} = $config), a repeated key is ignored (Proxmox
 *    refuses it: "duplicate attribute"), so the first one counts.
 * Unknown keys are kept, so a caller may ask for any key.
 */
#ifndef VSTORFS_PVE_CONFIG_H
#define VSTORFS_PVE_CONFIG_H

#include <stdbool.h>

#define PVE_CONFIG_PATH "/etc/pve/storage.cfg"
/* pmxcfs refuses files above 1 MiB; a larger storage.cfg is not Proxmox's. */
#define PVE_CONFIG_MAX_BYTES (1 << 20)

struct pve_cfg_prop {
	char *key;
	char *val; /* "1" for a key written without value */
};

struct pve_cfg_storage {
	char *type;      /* "dir", "lvm", "nfs", "rbd", ... */
	char *id;        /* the storage id */
	int nprops;
	struct pve_cfg_prop *props;
};

struct pve_config {
	int n;
	struct pve_cfg_storage *v; /* in file order */
};

/*
 * Parse the file at path (NULL: PVE_CONFIG_PATH). A missing file is an
 * empty config. Returns 0, or -errno when it cannot be read, -EFBIG when
 * it is larger than PVE_CONFIG_MAX_BYTES, -ENOMEM. Ignored lines are
 * logged (the first few of them, then a count).
 */
int pve_config_load(const char *path, struct pve_config **out);
void pve_config_free(struct pve_config *c);

const struct pve_cfg_storage *pve_config_find(const struct pve_config *c, const char *id);

/* A property's value, or NULL when the section does not have it. */
const char *pve_cfg_get(const struct pve_cfg_storage *s, const char *key);
/* A property as a string, dflt when absent. */
const char *pve_cfg_str(const struct pve_cfg_storage *s, const char *key, const char *dflt);
/* A boolean property as JSONSchema reads one (1/0, on/off, yes/no, true/false). */
bool pve_cfg_bool(const struct pve_cfg_storage *s, const char *key, bool dflt);
/* Network types (nfs, cifs, cephfs, glusterfs): shared by nature, path defaults to /mnt/pve/<id>. */
bool pve_cfg_network_type(const char *type);
/* Whether the storage is shared: "shared 1" or a network type. */
bool pve_cfg_shared(const struct pve_cfg_storage *s);
/* A file storage's path: "path", or /mnt/pve/<id> for a network type; "" if none. */
const char *pve_cfg_path(const struct pve_cfg_storage *s, char *buf, unsigned len);

/* Whether id is a valid pve-storage-id. */
bool pve_storage_id_valid(const char *id);

#endif
