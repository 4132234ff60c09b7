/* cp_path.c - where the control socket lives, and whom a process trusts
 * there.
 *
 * The control plane carries every instance's address: whoever answers on
 * the control socket decides where a caller sends its requests. So, as
 * ssh-agent and tmux do with theirs, the default directory
 * ($XDG_RUNTIME_DIR/dynamo, else /tmp/dynamo-$UID) is made 0700 and is not
 * used when another user owns it or it is open to group or others; and a
 * socket, default or not, is used only when this user owns it: before
 * binding or connecting by its owner on disk, and once connected by the
 * peer's credentials (SO_PEERCRED), which a swap of the file between the
 * check and the connect cannot fool.
 */
#define _GNU_SOURCE /* struct ucred */
#include "runtime/embedded/cp_path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/env_names.h"
#include "dynamo/control.h"
#include "dynamo/status.h"

#define SUN_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

static void default_dir(char *dir, size_t cap) {
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg && strlen(xdg) + 24 < cap)
    snprintf(dir, cap, "%s/dynamo", xdg);
  else
    snprintf(dir, cap, "/tmp/dynamo-%u", (unsigned)getuid());
}

const char *dyn_control_default_path(void) {
  static char path[SUN_PATH_MAX];
  const char *env = getenv(DYN_ENV_CONTROL_SOCKET);
  if (env && *env) return env;
  char dir[SUN_PATH_MAX - 16];
  default_dir(dir, sizeof dir);
  mkdir(dir, 0700); /* an existing one is checked where it is used */
  snprintf(path, sizeof path, "%s/control.sock", dir);
  return path;
}

/* The default directory, when path lies in it. */
static int check_default_dir(const char *path, char *err, size_t n) {
  char dir[SUN_PATH_MAX];
  default_dir(dir, sizeof dir);
  size_t dl = strlen(dir);
  if (strncmp(path, dir, dl) || path[dl] != '/' || strchr(path + dl + 1, '/')) return DYN_OK;
  struct stat st;
  if (lstat(dir, &st)) {
    snprintf(err, n, "control directory %s: %s", dir, strerror(errno));
  } else if (!S_ISDIR(st.st_mode)) {
    snprintf(err, n, "control directory %s is not a directory (a link or a file put there?)",
             dir);
  } else if (st.st_uid != geteuid()) {
    snprintf(err, n, "control directory %s is owned by uid %u, not by you (uid %u): another "
             "user may have made it; remove it, or set XDG_RUNTIME_DIR",
             dir, (unsigned)st.st_uid, (unsigned)geteuid());
  } else if (st.st_mode & 077) {
    snprintf(err, n, "control directory %s has mode %03o: group or others may use it; it "
             "must be 700", dir, (unsigned)(st.st_mode & 0777));
  } else {
    return DYN_OK;
  }
  return DYN_ECONTROL;
}

int dyn__control_path_check(const char *path, char *err, size_t n) {
  int rc = check_default_dir(path, err, n);
  if (rc) return rc;
  struct stat st;
  if (lstat(path, &st)) return DYN_OK; /* nothing there yet */
  if (!S_ISSOCK(st.st_mode)) {
    snprintf(err, n, "control socket %s is not a socket", path);
    return DYN_ECONTROL;
  }
  if (st.st_uid != geteuid()) {
    snprintf(err, n, "control socket %s is owned by uid %u, not by you (uid %u): refusing to "
             "use it", path, (unsigned)st.st_uid, (unsigned)geteuid());
    return DYN_ECONTROL;
  }
  return DYN_OK;
}

int dyn__control_peer_check(int fd, const char *path, char *err, size_t n) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len)) {
    snprintf(err, n, "control socket %s: cannot read the peer's credentials: %s", path,
             strerror(errno));
    return DYN_ECONTROL;
  }
  if (cred.uid != geteuid()) {
    snprintf(err, n, "the control plane at %s runs as uid %u, not as you (uid %u): refusing "
             "to use it", path, (unsigned)cred.uid, (unsigned)geteuid());
    return DYN_ECONTROL;
  }
  return DYN_OK;
}
