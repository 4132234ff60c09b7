/* control_put.c - puts one key on a running control plane and holds it
 * (keys live as long as the session that put them) for the disaggregation
 * test's thresholds changed while serving.
 *
 *   control_put SOCKET KEY VALUE SECONDS
 */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "dynamo/discovery.h"
#include "dynamo/runtime.h"
#include "dynamo/status.h"

static void on_timer(uv_timer_t *t) { dyn_runtime_stop(t->data); }

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: control_put SOCKET KEY VALUE SECONDS\n");
    return 2;
  }
  dyn_runtime_options_t o;
  dyn_runtime_options_init(&o);
  o.control_socket = argv[1];
  dyn_runtime_t *rt;
  int rc = dyn_runtime_create(&o, &rt);
  if (!rc) rc = dyn_discovery_put(rt, argv[2], argv[3]);
  if (rc) {
    fprintf(stderr, "control_put: %s\n", dyn_strerror(rc));
    return 1;
  }
  printf("put\n");
  fflush(stdout);
  uv_timer_t t;
  uv_timer_init(dyn_runtime_loop(rt), &t);
  t.data = rt;
  uv_timer_start(&t, on_timer, (uint64_t)(atof(argv[4]) * 1000), 0);
  dyn_runtime_run(rt);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(dyn_runtime_loop(rt), UV_RUN_NOWAIT);
  dyn_runtime_destroy(rt);
  return 0;
}
