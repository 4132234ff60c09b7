/* health.c - GET /live, GET /health and GET /metrics for a C worker, on its
 * own loop.
 *
 * Both answer from the worker's loop, so an answer is itself the proof of
 * liveness: a loop stuck in a handler cannot reply, and the probe times
 * out. Readiness is a state the worker moves forward (starting -> ready ->
 * draining) at the points where callers may start or must stop choosing
 * it. /metrics is the process's Prometheus registry (dyn_metrics_default).
 */
#include "service/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env_names.h"
#include "dynamo/http.h"
#include "dynamo/metrics.h"
#include "dynamo/status.h"

static dyn_http_server_t *g_server;
static dyn_runtime_t *g_rt;
static const char *g_state = "starting";

static void on_live(dyn_http_req_t *req, void *ud) {
  static const char body[] = "{\"status\":\"live\"}";
  dyn_http_respond(req, 200, "application/json", body, sizeof body - 1);
}

/* "ready" is what the worker reached; whether callers can find it is
 * discovery's to say, and can change (and change back) at any time. */
static void on_health(dyn_http_req_t *req, void *ud) {
  const char *state = g_state;
  if (!strcmp(state, "ready") && !dyn_runtime_registered(g_rt)) state = "unregistered";
  char body[64];
  int n = snprintf(body, sizeof body, "{\"status\":\"%s\"}", state);
  dyn_http_respond(req, strcmp(state, "ready") ? 503 : 200, "application/json", body, (size_t)n);
}

static void on_metrics(dyn_http_req_t *req, void *ud) {
  size_t len = 0;
  dyn_metrics_t *m = dyn_metrics_default();
  char *text = m ? dyn_metrics_render(m, &len) : NULL;
  if (!text) {
    dyn_http_error(req, 500, "out of memory");
    return;
  }
  dyn_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
  free(text);
}

int dyn__health_start(dyn_runtime_t *rt, const char *who) {
  const char *port = getenv(DYN_ENV_HEALTH_PORT);
  if (!port || !*port || !strcmp(port, "0")) return DYN_OK;
  char *end;
  errno = 0;
  long n = strtol(port, &end, 10);
  if (errno || *end || n < 1 || n > 65535) {
    fprintf(stderr, "error: %s: DYN_HEALTH_PORT '%s' is not a port number\n", who, port);
    return DYN_EINVAL;
  }
  const char *host = getenv(DYN_ENV_HEALTH_HOST);
  if (!host || !*host) host = "0.0.0.0";
  g_rt = rt;
  int rc = dyn_http_server_start(dyn_runtime_loop(rt), host, (int)n, &g_server);
  if (!rc) rc = dyn_http_route(g_server, "GET", "/live", on_live, NULL);
  if (!rc) rc = dyn_http_route(g_server, "GET", "/health", on_health, NULL);
  if (!rc) rc = dyn_http_route(g_server, "GET", "/metrics", on_metrics, NULL);
  if (rc) {
    fprintf(stderr, "error: %s: cannot serve health on %s:%ld: %s\n", who, host, n, dyn_strerror(rc));
    if (g_server) dyn_http_server_stop(g_server);
    g_server = NULL;
  }
  return rc;
}

void dyn__health_set(const char *state) { g_state = state; }

void dyn__health_stop(void) {
  if (g_server) dyn_http_server_stop(g_server);
  g_server = NULL;
}
