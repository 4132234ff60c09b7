/* supervisor.h - running the worker processes of a graph.
 *
 * The supervisor owns every worker process: it starts them in their own
 * process groups, prefixes their output with "[Service.i] ", restarts one
 * that dies (with backoff, giving up on one that keeps dying), and on
 * SIGINT/SIGTERM stops them all: SIGTERM to each group, a grace period,
 * SIGKILL for what is left. It runs on the caller's loop, next to whatever
 * else lives there (for `dynamo serve`, the embedded control plane).
 */
#ifndef DYN__SERVE_SUPERVISOR_H
#define DYN__SERVE_SUPERVISOR_H

#include <uv.h>

typedef struct dyn__supervisor dyn__supervisor_t;

typedef struct dyn__sup_options {
  double grace_s;         /* SIGTERM to SIGKILL on shutdown; 0 kills at once */
  double backoff_first_s; /* first restart delay; default 0.5, doubling */
  double backoff_max_s;   /* default 8 */
  int crash_limit;        /* this many exits ... default 5 */
  double crash_window_s;  /* ... within this many seconds stop the graph; default 60 */
  /* Called once every worker has been started. */
  void (*on_started)(void *arg);
  void *arg;
} dyn__sup_options_t;

/* Options left 0 (but grace_s) take their defaults; opt may be NULL. */
int dyn__sup_new(uv_loop_t *loop, const dyn__sup_options_t *opt, dyn__supervisor_t **out);
/* One worker process: label names it in output ("Backend.0"); argv and env
 * (NULL-terminated) are copied. */
int dyn__sup_add(dyn__supervisor_t *s, const char *label, char *const *argv, char *const *env);
/* Starts every worker and runs the loop until the graph has stopped and
 * every process of it is gone. Returns the exit code for `dynamo serve`:
 * 0 after a signal, 1 when a worker could not start or kept crashing. The
 * supervisor's own handles are closed when it returns. */
int dyn__sup_run(dyn__supervisor_t *s);
void dyn__sup_free(dyn__supervisor_t *s);

#endif
