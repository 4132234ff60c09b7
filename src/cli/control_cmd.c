/* control_cmd.c - `dynamo control`: the embedded control plane on its own.
 *
 * `dynamo serve` hosts the same thing in its own loop; running it alone is
 * for C programs and tests that manage their processes themselves.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/control.h"
#include "dynamo/runtime.h"

static void on_signal(uv_signal_t *s, int signum) {
  dyn_control_t *cp = s->data;
  dyn_log(DYN_LOG_INFO, "control: signal %d, stopping", signum);
  dyn_control_stop(cp);
  uv_stop(s->loop);
}

int dyn__cmd_control(int argc, char **argv) {
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if ((!strcmp(argv[i], "--socket") || !strcmp(argv[i], "-s")) && i + 1 < argc) {
      path = argv[++i];
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: dynamo control [--socket PATH]\n\n"
             "Serves discovery and events to the processes of a graph on this\n"
             "machine. PATH defaults to $DYN_CONTROL_SOCKET, else a per-user path.\n");
      return 0;
    } else {
      fprintf(stderr, "dynamo control: unknown option '%s' (try --help)\n", argv[i]);
      return 2;
    }
  }
  uv_loop_t *loop = uv_default_loop();
  dyn_control_t *cp;
  int rc = dyn_control_start(loop, path, &cp);
  if (rc) {
    fprintf(stderr, "dynamo control: cannot start: %s\n", dyn_strerror(rc));
    return 1;
  }
  uv_signal_t sigint, sigterm;
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  sigint.data = sigterm.data = cp;
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  printf("dynamo control listening on %s\n", dyn_control_path(cp));
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
