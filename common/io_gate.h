/*
 * io_gate: how many FUSE threads one layer that stops answering can hold.
 *
 * A file on a hard-mounted NFS export whose server went away, or on a
 * FUSE filesystem whose daemon is stopped, blocks pread(2) until it comes
 * back; nothing in userspace can cut such a call short. Without a bound,
 * every FUSE thread ends up in that one file and the whole mount (ls, the
 * other disks) stops. So each layer file has a gate: at most IO_GATE_LIMIT
 * reads of it in flight at once. A read that finds the gate full waits for
 * a slot for at most IO_GATE_WAIT_MS (a healthy file frees slots within
 * milliseconds, so busy readers only queue), then fails with EIO, logged
 * once per layer until a read of it completes again. One hung layer then
 * holds IO_GATE_LIMIT threads for good and the waiters for a bounded time
 * each; the rest of the mount keeps working.
 *
 * Gates are per file (dev:ino), shared by every opener of it in one set.
 */
#ifndef VSTORFS_IO_GATE_H
#define VSTORFS_IO_GATE_H

#define IO_GATE_LIMIT 4
#define IO_GATE_WAIT_MS 2000

struct io_gate_set;
struct io_gate;

struct io_gate_set *io_gate_set_new(void);
void io_gate_set_free(struct io_gate_set *set);   /* after every gate is put */

/* The gate of file `id` (created on first use), referenced; NULL on ENOMEM. */
struct io_gate *io_gate_get(struct io_gate_set *set, const char *id);
void io_gate_put(struct io_gate *g);

/* 0: go ahead (then io_gate_leave), or -EIO when the layer holds every
 * slot for the whole wait (logged once, naming `name`). */
int io_gate_enter(struct io_gate *g, const char *name);
void io_gate_leave(struct io_gate *g);

#endif
