/* tools.c - finding and running outside programs (docker, kubectl, ...).
 *
 * Plain fork/exec/wait: the CLI runs one such program at a time, waits for
 * it, and wants its output to reach the user unchanged. SIGPIPE is
 * ignored while feeding stdin so that a child that exits early (kubectl
 * refusing its input) is an exit status here, not a dead `dynamo`.
 */
#include "cli/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int dyn__tool_on_path(const char *name) {
  const char *path = getenv("PATH");
  if (!path || !*path) return 0;
  while (*path) {
    size_t n = strcspn(path, ":");
    char full[PATH_MAX];
    if (n && snprintf(full, sizeof full, "%.*s/%s", (int)n, path, name) < (int)sizeof full &&
        access(full, X_OK) == 0)
      return 1;
    path += n;
    if (*path == ':') path++;
  }
  return 0;
}

int dyn__tool_run(char *const argv[], const char *input, size_t input_len, int quiet) {
  int fds[2] = {-1, -1};
  if (input && pipe(fds)) return -1;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    if (input) close(fds[0]), close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    if (input) {
      dup2(fds[0], 0);
      close(fds[0]);
      close(fds[1]);
    }
    if (quiet) {
      int null = open("/dev/null", O_WRONLY);
      if (null >= 0) dup2(null, 1), dup2(null, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  if (input) {
    close(fds[0]);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    for (size_t off = 0; off < input_len;) {
      ssize_t w = write(fds[1], input + off, input_len - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break; /* the child stopped reading; its status says why */
      off += (size_t)w;
    }
    close(fds[1]);
    signal(SIGPIPE, old);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return WEXITSTATUS(st) == 127 ? -1 : WEXITSTATUS(st);
}
