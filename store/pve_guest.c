/*
 * pve_guest: the VM rules of a snapshot operation (see pve_cluster.h).
 *
 * Which node owns VM <vmid>: /etc/pve/.vmlist ({"ids":{"<vmid>":{"node":..,
 * "type":"qemu"|"lxc"}}}), else the node directory holding
 * nodes/<node>/qemu-server/<vmid>.conf (or lxc/). A VM nobody lists (an
 * orphaned disk) has no owner and no state to check; its lock is still
 * taken.
 *
 * These rules apply on a Proxmox node: where /etc/pve/nodes is a directory,
 * or qemu-server is installed (/usr/sbin/qm): there a missing /etc/pve/nodes
 * means pmxcfs is not mounted and nothing can be checked (EBUSY). Elsewhere
 * a vm-<vmid>-* name is just a name.
 */
#include "store/pve_cluster.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "store/store.h"

#define QEMU_LOCK_DIR "/var/lock/qemu-server"
#define LXC_LOCK_DIR "/run/lock/lxc"
#define QEMU_RUN_DIR "/var/run/qemu-server"
#define PVE_NODES_DIR PVE_ETC_DIR "/nodes"

struct guest {
	int vmid;
	char node[256];     /* "" = nobody lists it */
	bool lxc;
};

static bool is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool from_vmlist(struct guest *g)
{
	json_object *root = json_object_from_file(PVE_ETC_DIR "/.vmlist"), *ids, *e, *v;
	char key[16];
	bool found = false;

	if (!root)
		return false;
	snprintf(key, sizeof(key), "%d", g->vmid);
	if (json_object_object_get_ex(root, "ids", &ids) && json_object_object_get_ex(ids, key, &e)) {
		if (json_object_object_get_ex(e, "node", &v))
			snprintf(g->node, sizeof(g->node), "%s", json_object_get_string(v));
		if (json_object_object_get_ex(e, "type", &v))
			g->lxc = !strcmp(json_object_get_string(v), "lxc");
		found = true;
	}
	json_object_put(root);
	return found;
}

static void from_node_dirs(struct guest *g)
{
	DIR *d = opendir(PVE_NODES_DIR);
	struct dirent *de;
	char path[1024];

	if (!d)
		return;
	while ((de = readdir(d)) && !g->node[0]) {
		if (de->d_name[0] == '.')
			continue;
		for (int lxc = 0; lxc < 2 && !g->node[0]; lxc++) {
			snprintf(path, sizeof(path), PVE_NODES_DIR "/%s/%s/%d.conf", de->d_name,
				 lxc ? "lxc" : "qemu-server", g->vmid);
			if (access(path, F_OK) == 0) {
				snprintf(g->node, sizeof(g->node), "%s", de->d_name);
				g->lxc = lxc;
			}
		}
	}
	closedir(d);
}

/* The config's "lock: <what>" line of the current config (before any [section]). */
static bool config_lock(const struct guest *g, char *what, size_t len)
{
	char path[1024], line[1024];
	bool locked = false;
	FILE *f;

	snprintf(path, sizeof(path), PVE_NODES_DIR "/%s/%s/%d.conf", g->node,
		 g->lxc ? "lxc" : "qemu-server", g->vmid);
	if (!(f = fopen(path, "re")))
		return false;
	while (!locked && fgets(line, sizeof(line), f) && line[0] != '[') {
		if (!strncmp(line, "lock:", 5)) {
			char *v = line + 5;

			v += strspn(v, " \t");
			v[strcspn(v, "\r\n")] = 0;
			snprintf(what, len, "%s", v);
			locked = true;
		}
	}
	fclose(f);
	return locked;
}

/* The pid in /var/run/qemu-server/<vmid>.pid if that process lives, else 0. */
static int running_pid(const struct guest *g)
{
	char path[128];
	int pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), QEMU_RUN_DIR "/%d.pid", g->vmid);
	if (!(f = fopen(path, "re")))
		return 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM) ? pid : 0;
}

static int check_guest(const char *store, const char *volume, struct guest *g)
{
	char me[128], what[256];
	int pid;

	if (!from_vmlist(g))
		from_node_dirs(g);
	if (!g->node[0]) {
		vlog(LOG_DEBUG, "%s/%s: no node lists VM %d: an orphaned disk", store, volume, g->vmid);
		return 0;
	}
	pve_node_name(me, sizeof(me));
	if (strcmp(g->node, me)) {
		vlog(LOG_ERR, "%s/%s: VM %d belongs to node %s (this is %s): refusing", store, volume,
		     g->vmid, g->node, me);
		return -EBUSY;
	}
	if (config_lock(g, what, sizeof(what))) {
		vlog(LOG_ERR, "%s/%s: VM %d is locked (%s): refusing", store, volume, g->vmid, what);
		return -EBUSY;
	}
	if (!g->lxc && (pid = running_pid(g))) {
		vlog(LOG_ERR, "%s/%s: VM %d is running (pid %d): refusing", store, volume, g->vmid, pid);
		return -EBUSY;
	}
	return 0;
}

bool pve_lv_owned_elsewhere(const char *store, const char *lvname)
{
	struct guest g = { .vmid = -1 };
	char me[128];

	for (const char *p = lvname; *p && g.vmid < 0; p++)
		if ((p == lvname || p[-1] == '_' || p[-1] == '-') && (!strncmp(p, "vm-", 3) || !strncmp(p, "base-", 5)))
			g.vmid = pve_volume_vmid(p);
	if (g.vmid < 0 || !is_dir(PVE_NODES_DIR))
		return false;
	if (!from_vmlist(&g))
		from_node_dirs(&g);
	pve_node_name(me, sizeof(me));
	if (!g.node[0] || !strcmp(g.node, me))
		return false;
	vlog(LOG_NOTICE, "%s/%s: an unfinished snapshot operation of VM %d, which node %s owns: "
	     "left to that node", store, lvname, g.vmid, g.node);
	return true;
}

int pve_vm_guard_begin(const char *store, const char *volume, int *fd)
{
	struct guest g = { .vmid = pve_volume_vmid(volume) };
	char path[128];
	int rc, lockfd;

	*fd = -1;
	if (g.vmid < 0)
		return 0;
	if (!is_dir(PVE_NODES_DIR)) {
		if (access("/usr/sbin/qm", X_OK) < 0)
			return 0;
		vlog(LOG_ERR, "%s/%s: %s is missing (pmxcfs not mounted?): cannot tell who owns VM %d: "
		     "refusing", store, volume, PVE_NODES_DIR, g.vmid);
		return -EBUSY;
	}
	/* Which lock file: the guest's type decides, so look it up first (read-only). */
	if (!from_vmlist(&g))
		from_node_dirs(&g);
	mkdir(g.lxc ? LXC_LOCK_DIR : QEMU_LOCK_DIR, 0755);
	if (g.lxc)
		snprintf(path, sizeof(path), LXC_LOCK_DIR "/pve-config-%d.lock", g.vmid);
	else
		snprintf(path, sizeof(path), QEMU_LOCK_DIR "/lock-%d.conf", g.vmid);
	lockfd = store_lock_file(path, PVE_VM_LOCK_TIMEOUT_S);
	if (lockfd < 0)
		return lockfd == -EBUSY ? lockfd : -EIO;
	/* Under the lock: what qm may have changed while we waited. */
	g.node[0] = 0;
	rc = check_guest(store, volume, &g);
	if (rc < 0) {
		close(lockfd);
		return rc;
	}
	*fd = lockfd;
	return 0;
}

void pve_vm_guard_end(int fd)
{
	if (fd >= 0)
		close(fd);
}
