/* proc.c - process-group liveness, and finding this process's children.
 *
 * libuv reaps only the pids it spawned, with waitpid(pid). The orphans we
 * inherit as a subreaper are nobody's business but ours, so we find them in
 * /proc (their parent is us) and reap them by pid, never with waitpid(-1),
 * which would steal an exit status libuv is waiting for.
 */
#include "serve/proc.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "dynamo/status.h"

int dyn__proc_become_subreaper(void) {
#if defined(__linux__) && defined(PR_SET_CHILD_SUBREAPER)
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) return DYN_ESYS;
#endif
  return DYN_OK;
}

int dyn__proc_group_alive(pid_t pgid) {
  if (pgid <= 0) return 0;
  /* EPERM means a process exists that we may not signal: still alive. */
  return kill(-pgid, 0) == 0 || errno == EPERM;
}

static int skipped(pid_t pid, const pid_t *skip, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (skip[i] == pid) return 1;
  return 0;
}

/* Calls fn for each child of this process with its state letter. */
static void each_child(void (*fn)(pid_t, char, void *), void *arg, const pid_t *skip,
                       size_t nskip) {
#ifdef __linux__
  DIR *d = opendir("/proc");
  if (!d) return;
  pid_t self = getpid();
  struct dirent *de;
  while ((de = readdir(d))) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    /* "pid (comm) S ppid ...": comm may hold spaces and parens, so parse
     * from the last ')'. */
    char *rp = strrchr(buf, ')');
    char state;
    long ppid;
    if (!rp || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2) continue;
    if (ppid != self || skipped((pid_t)pid, skip, nskip)) continue;
    fn((pid_t)pid, state, arg);
  }
  closedir(d);
#else
  (void)fn, (void)arg, (void)skip, (void)nskip;
#endif
}

static void reap_one(pid_t pid, char state, void *arg) {
  size_t *reaped = arg;
  if (state != 'Z') return;
  int status;
  if (waitpid(pid, &status, WNOHANG) == pid) (*reaped)++;
}

size_t dyn__proc_reap_orphans(const pid_t *skip, size_t nskip) {
  size_t reaped = 0;
  each_child(reap_one, &reaped, skip, nskip);
  return reaped;
}

typedef struct signal_arg {
  int sig;
  size_t live;
} signal_arg_t;

static void signal_one(pid_t pid, char state, void *arg) {
  signal_arg_t *a = arg;
  if (state == 'Z') return; /* already dead, waiting to be reaped */
  a->live++;
  if (a->sig) kill(pid, a->sig);
}

size_t dyn__proc_signal_children(int sig, const pid_t *skip, size_t nskip) {
  signal_arg_t a = {sig, 0};
  each_child(signal_one, &a, skip, nskip);
  return a.live;
}
