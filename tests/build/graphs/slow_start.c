/* slow_start.c - a C service whose on_start takes a while, for the
 * health-port test: /health must answer 503 until on_start has returned
 * and the endpoint is registered, and 200 after. It takes about a second,
 * or, with $SLOW_GATE set, until that file exists (at most a minute): a
 * test that must catch the worker mid-start then ends it when it has
 * looked, however slowly a loaded machine runs it (as graphs/slow.py).
 *
 * on_start is synchronous in the C service API; this one keeps the
 * worker's loop turning while it waits (as a service that loads a model in
 * a worker thread would), so that the health server can answer meanwhile.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dynamo/service.h"

static void ping(dyn_request_t *req, const void *body, size_t len, void *ud) {
  dyn_request_send(req, "\"pong\"", 6);
  dyn_request_end(req);
}

typedef struct warm {
  const char *gate; /* $SLOW_GATE, or NULL */
  uint64_t deadline;
  int done;
} warm_t;

static void on_timer(uv_timer_t *t) {
  warm_t *w = t->data;
  w->done = !w->gate || access(w->gate, F_OK) == 0 || uv_now(t->loop) >= w->deadline;
}

static int warm_up(dyn_service_ctx_t *ctx) {
  printf("SlowC: warming up\n");
  fflush(stdout);
  uv_loop_t *loop = dyn_runtime_loop(dyn_service_runtime(ctx));
  uv_timer_t timer;
  const char *gate = getenv("SLOW_GATE");
  warm_t w = {.gate = gate && *gate ? gate : NULL, .deadline = uv_now(loop) + 60000};
  uv_timer_init(loop, &timer);
  timer.data = &w;
  if (w.gate) uv_timer_start(&timer, on_timer, 20, 20);
  else uv_timer_start(&timer, on_timer, 1000, 0);
  while (!w.done) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(loop, UV_RUN_NOWAIT); /* the close callback, before timer goes */
  return 0;
}

static const dyn_endpoint_def_t endpoints[] = {{"ping", ping}, {NULL, NULL}};

static const dyn_service_def_t slow = {
    .name = "SlowC", .namespace_ = "slow", .endpoints = endpoints, .on_start = warm_up};

const dyn_service_def_t *const dyn_services[] = {&slow, NULL};
