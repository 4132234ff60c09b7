/* test_shutdown.c - graceful shutdown: stop accepting, let in-flight
 * streams finish within a deadline, deregister, close.
 *
 * echo_worker runs dyn_runtime_shutdown(rt, 2000) on SIGTERM. A stream in
 * flight must still get every message and end DYN_OK; callers must see the
 * instance leave at once and send new work elsewhere; the process must exit
 * 0 within the grace period. A stream longer than the grace is cancelled
 * with an error. Then the same in this process, on a shared loop.
 */
#include "harness.h"

static dyn_runtime_t *rt;
static dyn_client_t *c;

static int nev;
static char evs[32][64];
static void on_event(const char *subject, const void *data, size_t len, void *ud) {
  if (nev >= 32) return;
  size_t n = len < 63 ? len : 63;
  memcpy(evs[nev], data, n);
  evs[nev++][n] = 0;
}
static int saw(const char *text) {
  for (int i = 0; i < nev; i++)
    if (!strcmp(evs[i], text)) return 1;
  return 0;
}

static int listed(uint64_t id) {
  uint64_t ids[8];
  size_t n = dyn_client_instances(c, ids, 8);
  for (size_t i = 0; i < n && i < 8; i++)
    if (ids[i] == id) return 1;
  return 0;
}

static void test_drain(const h_worker_t *a, const h_worker_t *b, const char *a_err) {
  /* A raw caller connected before the shutdown, to try a request during it. */
  int raw = h_tcp_connect(a->addr);
  REQUIRE(raw >= 0);
  h_send_hello(raw, 1);
  h_frame_t f;
  CHECK_EQ_INT(h_read_frame(raw, &f, 3000), 1);

  h_call_t hc;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_DIRECT, a->id, "10 50 drain", &hc, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(hc.ndata >= 1, 3000, rt));

  double t0 = h_now_ms_f();
  kill(a->pid, SIGTERM);
  /* Deregistration comes first: callers stop choosing it. */
  CHECK(PUMP_UNTIL(!listed(a->id), 1000, rt));
  double gone = h_now_ms_f() - t0;
  printf("measured: instance left the client's list %.2f ms after SIGTERM\n", gone);
  CHECK_EQ_INT(hc.done, 0); /* while its stream runs on */

  /* New work goes to the other instance. */
  int good = 0;
  for (int i = 0; i < 6; i++) {
    h_call_t x;
    int rc = h_call(rt, c, i % 2 ? DYN_ROUTE_RANDOM : DYN_ROUTE_ROUND_ROBIN, 0, "2 0 new", &x,
                    3000);
    good += rc == DYN_OK && x.status == DYN_OK && x.instance == b->id;
  }
  CHECK_EQ_INT(good, 6);
  /* No new connections; a new request on an open one is refused as
   * retryable, and nothing of it runs. */
  int fd = h_tcp_connect(a->addr);
  CHECK_MSG(fd < 0, "the draining instance still accepts connections");
  if (fd >= 0) close(fd);
  /* A draining instance first says GOAWAY on its open connections. */
  CHECK_EQ_INT(h_read_frame(raw, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 7);
  h_send_request(raw, 1, "shut/echo/generate", "1 0 late");
  CHECK_EQ_INT(h_read_frame(raw, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 5);
  CHECK(f.flags & 1);
  CHECK_MSG(strstr(f.payload, "shutting down") != NULL, "error: %s", f.payload);

  /* The stream in flight still gets everything. */
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  CHECK_STATUS(hc.status, DYN_OK);
  CHECK_EQ_INT(hc.ndata, 10);
  CHECK_EQ_STR(hc.data[9], "drain-9");

  int status = -1;
  CHECK_EQ_INT(h_wait_exit(a->pid, 3000, &status), 0);
  double exited = h_now_ms_f() - t0;
  printf("drained worker exited %.1f ms after SIGTERM\n", exited);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_MSG(exited < 2000.0, "exit took %.1f ms (grace 2000)", exited);
  CHECK(h_wait_closed(raw, 1000)); /* and it closed its connections */
  close(raw);
  CHECK_EQ_INT(h_file_count(a_err, "shut down, 0 cancelled"), 1);
}

/* Longer than the grace: cancelled, told (as an instance gone mid-stream,
 * DYN_EDISCONNECTED, with the reason), and the process still exits. */
static void test_grace_expiry(const h_worker_t *w, const char *err) {
  h_call_t hc;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_DIRECT, w->id, "1000 20 long", &hc, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(hc.ndata >= 1, 3000, rt));
  double t0 = h_now_ms_f();
  kill(w->pid, SIGTERM);
  CHECK(PUMP_UNTIL(hc.done, 4000, rt));
  double ms = hc.t_done - t0;
  printf("stream past the grace ended after %.1f ms: %s\n", ms, hc.message);
  CHECK_STATUS(hc.status, DYN_EDISCONNECTED); /* GONE: the work may go on elsewhere */
  CHECK_MSG(strstr(hc.message, "shut down") != NULL, "message: %s", hc.message);
  CHECK_MSG(ms >= 1900.0 && ms < 3000.0, "ended after %.1f ms (grace 2000)", ms);
  CHECK(PUMP_UNTIL(saw("long"), 2000, rt)); /* the handler heard the cancel */
  int status = -1;
  CHECK_EQ_INT(h_wait_exit(w->pid, 2000, &status), 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ_INT(h_file_count(err, "shut down, 1 cancelled"), 1);
}

/* ---- in this process: a server runtime and a client on one loop -------- */

typedef struct slow {
  dyn_request_t *req;
  uv_timer_t timer;
  int stuck;
} slow_t;

static int cancels;
static void slow_free(uv_handle_t *h) { free(h->data); }
static void slow_fire(uv_timer_t *t) {
  slow_t *s = t->data;
  dyn_request_send(s->req, "last", 4);
  dyn_request_end(s->req);
  uv_close((uv_handle_t *)&s->timer, slow_free);
}
static void slow_cancel(dyn_request_t *req, void *ud) {
  slow_t *s = ud;
  cancels++;
  CHECK(dyn_request_cancelled(req));
  CHECK_STATUS(dyn_request_send(req, "x", 1), DYN_ECANCELED);
  uv_timer_stop(&s->timer);
  dyn_request_fail(req, "cancelled");
  uv_close((uv_handle_t *)&s->timer, slow_free);
}
/* Body "stuck" never ends by itself; anything else ends after 200 ms. */
static void slow_handler(dyn_request_t *req, const void *body, size_t len, void *ud) {
  slow_t *s = calloc(1, sizeof *s);
  s->req = req;
  s->stuck = len == 5 && !memcmp(body, "stuck", 5);
  dyn_request_on_cancel(req, slow_cancel, s);
  dyn_request_set_data(req, s);
  CHECK(dyn_request_data(req) == s);
  CHECK(dyn_request_id(req) != 0);
  CHECK_EQ_STR(dyn_endpoint_path(dyn_request_endpoint(req)), "inproc/svc/gen");
  uv_timer_init(dyn_runtime_loop(dyn_endpoint_runtime(dyn_request_endpoint(req))), &s->timer);
  s->timer.data = s;
  dyn_request_send(req, "first", 5);
  if (!s->stuck) uv_timer_start(&s->timer, slow_fire, 200, 0);
}

static void test_in_process(void) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  dyn_runtime_t *srv = h_runtime(&loop), *cli = h_runtime(&loop);
  REQUIRE(srv && cli);
  dyn_endpoint_t *ep, *cep;
  REQUIRE(dyn_runtime_endpoint(srv, "inproc/svc/gen", &ep) == DYN_OK);
  CHECK_STATUS(dyn_endpoint_serve(ep, slow_handler, NULL), DYN_OK);
  CHECK_STATUS(dyn_endpoint_serve(ep, slow_handler, NULL), DYN_EEXIST);
  CHECK(strncmp(dyn_runtime_address(srv), "127.0.0.1:", 10) == 0);
  REQUIRE(dyn_runtime_endpoint(cli, "inproc/svc/gen", &cep) == DYN_OK);
  dyn_client_t *k;
  REQUIRE(dyn_endpoint_client(cep, &k) == DYN_OK);
  REQUIRE(dyn_client_wait(k, 1, 3000) == DYN_OK);

  /* Drains: shutdown returns 0 and the stream ended normally during it. */
  h_call_t a;
  CHECK_STATUS(h_call_start(k, DYN_ROUTE_RANDOM, 0, "normal", &a, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(a.ndata >= 1, 3000, cli));
  CHECK_EQ_INT(dyn_runtime_inflight(srv), 1);
  uint64_t t0 = h_now_ms();
  CHECK_EQ_INT(dyn_runtime_shutdown(srv, 2000), 0);
  CHECK_LE_INT(h_now_ms() - t0, 1000);
  CHECK_EQ_INT(dyn_runtime_inflight(srv), 0);
  CHECK(PUMP_UNTIL(a.done, 2000, cli));
  CHECK_STATUS(a.status, DYN_OK);
  CHECK_EQ_INT(a.ndata, 2);
  CHECK(PUMP_UNTIL(dyn_client_instances(k, NULL, 0) == 0, 1000, cli));
  CHECK_STATUS(dyn_endpoint_serve(ep, slow_handler, NULL), DYN_ECLOSED);
  dyn_runtime_destroy(srv);

  /* A stuck handler: cancelled after the grace, shutdown reports it. */
  srv = h_runtime(&loop);
  REQUIRE(srv);
  REQUIRE(dyn_runtime_endpoint(srv, "inproc/svc/gen", &ep) == DYN_OK);
  CHECK_STATUS(dyn_endpoint_serve(ep, slow_handler, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(dyn_client_instances(k, NULL, 0) == 1, 2000, cli));
  h_call_t b;
  CHECK_STATUS(h_call_start(k, DYN_ROUTE_RANDOM, 0, "stuck", &b, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(b.ndata >= 1, 3000, cli));
  t0 = h_now_ms();
  CHECK_EQ_INT(dyn_runtime_shutdown(srv, 300), 1);
  uint64_t took = h_now_ms() - t0;
  CHECK_MSG(took >= 290 && took < 1500, "shutdown took %llu ms (grace 300)",
            (unsigned long long)took);
  CHECK_EQ_INT(cancels, 1);
  CHECK(PUMP_UNTIL(b.done, 2000, cli));
  CHECK_STATUS(b.status, DYN_EDISCONNECTED);
  dyn_runtime_destroy(srv);

  dyn_client_free(k);
  dyn_runtime_destroy(cli);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* Requests that race a drain (sent before the caller heard the instance
 * leave) are refused as retryable or answered after GOAWAY: either way
 * none fails, the caller sends them on to the live instance. */
static void test_drain_race(void) {
  h_worker_t x, y;
  REQUIRE(h_start_worker("shut", NULL, &x) == 0);
  REQUIRE(h_start_worker("shut", NULL, &y) == 0);
  CHECK(PUMP_UNTIL(listed(x.id) && listed(y.id), 3000, rt));
  h_call_t slow;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_DIRECT, x.id, "6 50 slow", &slow, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(slow.ndata >= 1, 3000, rt));
  kill(x.pid, SIGTERM);
  usleep(20 * 1000); /* x is draining; we have not pumped, so it is still listed */
  enum { N = 20 };
  static h_call_t calls[N];
  for (int i = 0; i < N; i++)
    CHECK_STATUS(h_call_start(c, DYN_ROUTE_ROUND_ROBIN, 0, "1 0 race", &calls[i], NULL), DYN_OK);
  int ok = 0, on_y = 0;
  for (int i = 0; i < N; i++) {
    CHECK(PUMP_UNTIL(calls[i].done, 3000, rt));
    ok += calls[i].status == DYN_OK;
    on_y += calls[i].instance == y.id;
  }
  CHECK_EQ_INT(ok, N); /* how many met the draining x depends on timing */
  printf("measured: %d/%d racing requests succeeded, %d on the live instance\n", ok, N, on_y);
  CHECK(PUMP_UNTIL(slow.done, 3000, rt));
  CHECK_STATUS(slow.status, DYN_OK);
  int status;
  CHECK_EQ_INT(h_wait_exit(x.pid, 3000, &status), 0);
  kill(y.pid, SIGTERM);
  CHECK_EQ_INT(h_wait_exit(y.pid, 3000, &status), 0);
}

int main(void) {
  h_init("shutdown");
  REQUIRE(h_start_control() > 0);
  char a_err[128], c_err[128];
  snprintf(a_err, sizeof a_err, "%s/a.err", h_dir);
  snprintf(c_err, sizeof c_err, "%s/c.err", h_dir);
  h_worker_t a, b;
  REQUIRE(h_start_worker("shut", a_err, &a) == 0);
  REQUIRE(h_start_worker("shut", NULL, &b) == 0);
  rt = h_runtime(NULL);
  REQUIRE(rt);
  dyn_subscription_t *sub;
  REQUIRE(dyn_subscribe(rt, "test.cancelled", on_event, NULL, &sub) == DYN_OK);
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "shut/echo/generate", &ep) == DYN_OK);
  REQUIRE(dyn_endpoint_client(ep, &c) == DYN_OK);
  REQUIRE(dyn_client_wait(c, 2, 5000) == DYN_OK);

  test_drain(&a, &b, a_err);

  h_worker_t w;
  REQUIRE(h_start_worker("shut", c_err, &w) == 0);
  CHECK(PUMP_UNTIL(listed(w.id), 3000, rt));
  test_grace_expiry(&w, c_err);

  test_drain_race();
  test_in_process();

  dyn_unsubscribe(sub);
  dyn_client_free(c);
  dyn_runtime_destroy(rt);
  TEST_END();
}
