/* cp_path.h - the control socket's directory and owner checks (cp_path.c). */
#ifndef DYN__CP_PATH_H
#define DYN__CP_PATH_H
#include <stddef.h>

/* Before binding or connecting to path: DYN_OK, or DYN_ECONTROL with err
 * naming the path and what is wrong (the default directory owned by
 * another user or open to group or others; a socket there that is not
 * this user's). */
int dyn__control_path_check(const char *path, char *err, size_t n);
/* Once connected on fd: DYN_OK if the process answering runs as this
 * user, else DYN_ECONTROL with err naming its uid. */
int dyn__control_peer_check(int fd, const char *path, char *err, size_t n);
#endif
