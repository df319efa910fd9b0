/*
 * handles: open files and directories by number, not by pointer.
 *
 * The kernel may send RELEASE while a request on the same handle is still
 * running in another thread (a request abandoned because its caller was
 * killed). So fi->fh is an id: every request looks it up and holds it, and
 * release frees the object only once the last holder lets go.
 */
#ifndef VSTORFS_FS_HANDLES_H
#define VSTORFS_FS_HANDLES_H

#include <stdint.h>

/* Register obj; its destructor runs after handle_close once unused. 0 on ENOMEM. */
uint64_t handle_add(void *obj, void (*destroy)(void *obj));
/* The object, held until handle_put; NULL if the handle is closed or unknown. */
void *handle_get(uint64_t id);
void handle_put(uint64_t id);
void handle_close(uint64_t id);

#endif
