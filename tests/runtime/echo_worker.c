/* echo_worker.c - a worker process for the integration tests.
 *
 * Serves test/echo/generate: the body is "COUNT DELAY_MS TEXT"; it streams
 * COUNT messages "TEXT-i", one every DELAY_MS (0: all at once), then ends.
 * A body starting with "fail" fails the stream with that text. When a
 * request is cancelled it publishes "test.cancelled" with the request's
 * TEXT, so a test can see the cancel reach the handler. SIGTERM runs a
 * graceful shutdown with a 2 s grace period.
 *
 * usage: echo_worker [NAMESPACE]   (control socket from DYN_CONTROL_SOCKET)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dynamo/dynamo.h"

typedef struct job {
  dyn_request_t *req;
  dyn_runtime_t *rt;
  uv_timer_t timer;
  int left, sent, delay;
  int ended; /* the request is finished (and freed) */
  char text[128];
} job_t;

static void job_free(uv_handle_t *h) { free(h->data); }

static void job_end(job_t *j, int ok) {
  if (j->ended) return;
  j->ended = 1;
  if (ok) dyn_request_end(j->req);
  else dyn_request_fail(j->req, "cancelled");
  uv_close((uv_handle_t *)&j->timer, job_free);
}

static int g_terminating, g_cancelled_in_shutdown;

static void on_cancel(dyn_request_t *req, void *ud) {
  job_t *j = ud;
  if (g_terminating) g_cancelled_in_shutdown++;
  dyn_publish(j->rt, "test.cancelled", j->text, strlen(j->text));
  /* Finish now, not at the next tick: when a shutdown cancels us, the
   * loop stops before that tick, and the job and request would leak. */
  uv_timer_stop(&j->timer);
  job_end(j, 0);
}

static void tick(uv_timer_t *t) {
  job_t *j = t->data;
  if (dyn_request_cancelled(j->req)) {
    job_end(j, 0);
    return;
  }
  do {
    char msg[160];
    int n = snprintf(msg, sizeof msg, "%s-%d", j->text, j->sent++);
    dyn_request_send(j->req, msg, (size_t)n);
    j->left--;
    /* A send can fail the connection, which cancels (and so ends) us. */
  } while (!j->ended && j->left > 0 && j->delay == 0);
  if (j->ended) return;
  if (j->left <= 0) job_end(j, 1);
  else uv_timer_start(&j->timer, tick, (uint64_t)j->delay, 0);
}

static void handle(dyn_request_t *req, const void *body, size_t len, void *ud) {
  char buf[256];
  size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
  memcpy(buf, body, n);
  buf[n] = 0;
  if (!strncmp(buf, "fail", 4)) {
    dyn_request_fail(req, buf);
    return;
  }
  job_t *j = calloc(1, sizeof *j);
  j->req = req;
  j->rt = ud;
  if (sscanf(buf, "%d %d %127s", &j->left, &j->delay, j->text) != 3) {
    free(j);
    dyn_request_fail(req, "bad request: want COUNT DELAY_MS TEXT");
    return;
  }
  dyn_request_on_cancel(req, on_cancel, j);
  uv_timer_init(dyn_runtime_loop(j->rt), &j->timer);
  j->timer.data = j;
  if (j->left <= 0) {
    job_end(j, 1);
    return;
  }
  uv_timer_start(&j->timer, tick, (uint64_t)j->delay, 0);
}

static dyn_runtime_t *g_rt;
/* From a loop callback, dyn_runtime_shutdown may only start the shutdown
 * (dyn_runtime_run returns when it is done), so main reports the outcome,
 * counting the cancellations itself. */
static void on_term(uv_signal_t *s, int sig) {
  uv_signal_stop(s);
  g_terminating = 1;
  dyn_runtime_shutdown(g_rt, 2000);
}

int main(int argc, char **argv) {
  const char *ns = argc > 1 ? argv[1] : "test";
  signal(SIGPIPE, SIG_IGN);
  dyn_runtime_options_t o;
  dyn_runtime_options_init(&o);
  int rc = dyn_runtime_create(&o, &g_rt);
  if (rc) {
    fprintf(stderr, "echo_worker: %s\n", dyn_strerror(rc));
    return 1;
  }
  char path[128];
  snprintf(path, sizeof path, "%s/echo/generate", ns);
  dyn_endpoint_t *ep;
  rc = dyn_runtime_endpoint(g_rt, path, &ep);
  if (!rc) rc = dyn_endpoint_serve(ep, handle, g_rt);
  if (rc) {
    fprintf(stderr, "echo_worker: serve: %s\n", dyn_strerror(rc));
    return 1;
  }
  uv_signal_t term;
  uv_signal_init(dyn_runtime_loop(g_rt), &term);
  uv_signal_start(&term, on_term, SIGTERM);
  uv_unref((uv_handle_t *)&term);
  printf("ready %llx %s\n", (unsigned long long)dyn_runtime_instance_id(g_rt),
         dyn_runtime_address(g_rt));
  fflush(stdout);
  dyn_runtime_run(g_rt);
  if (g_terminating)
    fprintf(stderr, "echo_worker: shut down, %d cancelled\n", g_cancelled_in_shutdown);
  uv_close((uv_handle_t *)&term, NULL);
  dyn_runtime_destroy(g_rt);
  return 0;
}
