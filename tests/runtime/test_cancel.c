/* test_cancel.c - cancellation reaches the handler.
 *
 * echo_worker publishes "test.cancelled" with the stream's TEXT when its
 * cancel callback runs, so each case checks both ends: the caller's
 * on_done (DYN_ECANCELED at once, or DYN_ETIMEDOUT past a deadline) and
 * the handler hearing of it. Ways to cancel: dyn_stream_cancel, a
 * deadline, dyn_sync_free, dyn_client_free, cancelling from on_data, and
 * the caller's connection going away.
 */
#include "harness.h"

static dyn_runtime_t *rt;
static dyn_client_t *c;
static h_worker_t w;

static int nev;
static char evs[64][64];
static double ev_t[64];

static void on_event(const char *subject, const void *data, size_t len, void *ud) {
  if (nev >= 64) return;
  size_t n = len < 63 ? len : 63;
  memcpy(evs[nev], data, n);
  evs[nev][n] = 0;
  ev_t[nev] = h_now_ms_f();
  nev++;
}

static int saw(const char *text) {
  for (int i = 0; i < nev; i++)
    if (!strcmp(evs[i], text)) return i;
  return -1;
}

static int probe_seen;
static void on_probe(const char *subject, const void *data, size_t len, void *ud) {
  probe_seen++;
}

static void test_stream_cancel(void) {
  h_call_t hc;
  dyn_stream_t *s = NULL;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_RANDOM, 0, "1000 20 cancelme", &hc, &s), DYN_OK);
  CHECK(s != NULL);
  CHECK(PUMP_UNTIL(hc.ndata >= 2, 3000, rt));
  CHECK_EQ_U64(dyn_stream_instance_id(s), w.id);
  int nd = hc.ndata;
  double t0 = h_now_ms_f();
  dyn_stream_cancel(s);
  /* on_done ran before dyn_stream_cancel returned. */
  CHECK_EQ_INT(hc.done, 1);
  CHECK_STATUS(hc.status, DYN_ECANCELED);
  CHECK(PUMP_UNTIL(saw("cancelme") >= 0, 2000, rt));
  if (saw("cancelme") >= 0)
    printf("measured: cancel reached the handler (event back) after %.2f ms\n",
           ev_t[saw("cancelme")] - t0);
  /* Nothing more for the finished stream: no second on_done, no data. */
  PUMP_FOR(60, rt);
  CHECK_EQ_INT(hc.done, 1);
  CHECK_EQ_INT(hc.ndata, nd);
}

static void test_deadline(void) {
  h_call_t hc;
  memset(&hc, 0, sizeof hc);
  dyn_call_options_t o = {DYN_ROUTE_ROUND_ROBIN, 0, 100, 0};
  double t0 = h_now_ms_f();
  CHECK_STATUS(dyn_client_generate(c, &o, "1000 20 deadline", 16, &h_call_cb, &hc, NULL),
               DYN_OK);
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  CHECK_STATUS(hc.status, DYN_ETIMEDOUT);
  double ms = hc.t_done - t0;
  printf("deadline 100 ms: stream ended after %.1f ms with %d messages\n", ms, hc.ndata);
  CHECK_MSG(ms >= 90.0 && ms < 2500.0, "ended after %.1f ms", ms); /* loose: CI may be busy */
  CHECK(hc.ndata >= 1 && hc.ndata < 20);
  CHECK_MSG(strstr(hc.message, "deadline") != NULL, "message: %s", hc.message);
  CHECK(PUMP_UNTIL(saw("deadline") >= 0, 2000, rt));

  /* A deadline that is not reached changes nothing, and its timer does
   * not fire later. */
  o.deadline_ms = 3000;
  memset(&hc, 0, sizeof hc);
  CHECK_STATUS(dyn_client_generate(c, &o, "3 10 quick", 10, &h_call_cb, &hc, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  CHECK_STATUS(hc.status, DYN_OK);
  CHECK_EQ_INT(hc.ndata, 3);
  PUMP_FOR(50, rt);
  CHECK_EQ_INT(hc.done, 1);
  CHECK(saw("quick") < 0);
}

/* Time spent outside the loop before a call does not count against its
 * deadline: a program that computes between calls gets its full budget. */
static void test_deadline_after_idle(void) {
  h_call_t hc;
  CHECK_STATUS(h_call(rt, c, DYN_ROUTE_RANDOM, 0, "1 0 warm", &hc, 3000), DYN_OK);
  h_sleep_ms(300); /* busy elsewhere; the loop does not run */
  dyn_call_options_t o = {DYN_ROUTE_RANDOM, 0, 200, 0};
  memset(&hc, 0, sizeof hc);
  double t0 = h_now_ms_f();
  CHECK_STATUS(dyn_client_generate(c, &o, "2 30 idle", 9, &h_call_cb, &hc, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  CHECK_MSG(hc.status == DYN_OK && hc.ndata == 2, "status %d (%s) after %.1f ms, %d messages",
            hc.status, hc.message, hc.t_done - t0, hc.ndata);

  /* The blocking API, likewise. */
  h_sleep_ms(300);
  dyn_sync_stream_t *ss;
  REQUIRE(dyn_client_call(c, &o, "2 30 idle2", 10, &ss) == DYN_OK);
  const void *data;
  size_t len;
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_OK);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_OK);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_EOF);
  dyn_sync_free(ss);

  /* Nor against a blocking wait's timeout. */
  REQUIRE(dyn_client_call(c, NULL, "1 400 idle3", 11, &ss) == DYN_OK);
  t0 = h_now_ms_f();
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 100), DYN_ETIMEDOUT);
  h_sleep_ms(300);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 1000), DYN_OK);
  double ms = h_now_ms_f() - t0;
  CHECK_MSG(ms > 350.0 && ms < 2500.0, "message after %.1f ms", ms); /* loose: CI may be busy */
  dyn_sync_free(ss);
  h_sleep_ms(300);
  CHECK_STATUS(dyn_client_wait(c, 1, 250), DYN_OK);

  /* A timeout ends the wait when it passes, even one that has passed
   * already by the loop's stale clock, or a zero timeout: the message
   * below comes only after 1.5 s. */
  REQUIRE(dyn_client_call(c, NULL, "1 1500 late", 11, &ss) == DYN_OK);
  PUMP_FOR(20, rt);
  h_sleep_ms(300);
  t0 = h_now_ms_f();
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 0), DYN_ETIMEDOUT);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 100), DYN_ETIMEDOUT);
  h_sleep_ms(300);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 100), DYN_ETIMEDOUT);
  h_sleep_ms(300);
  CHECK_STATUS(dyn_client_wait(c, 5, 100), DYN_ETIMEDOUT);
  ms = h_now_ms_f() - t0;
  CHECK_MSG(ms < 1200.0, "four short waits took %.1f ms", ms);
  dyn_sync_free(ss);
}

static void test_sync_free(void) {
  dyn_sync_stream_t *ss;
  REQUIRE(dyn_client_call(c, NULL, "1000 20 syncfree", 16, &ss) == DYN_OK);
  const void *data;
  size_t len;
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_OK);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_OK);
  dyn_sync_free(ss);
  CHECK(PUMP_UNTIL(saw("syncfree") >= 0, 2000, rt));
}

static void test_client_free(void) {
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "cancel/echo/generate", &ep) == DYN_OK);
  dyn_client_t *c2;
  REQUIRE(dyn_endpoint_client(ep, &c2) == DYN_OK);
  REQUIRE(dyn_client_wait(c2, 1, 3000) == DYN_OK);
  h_call_t a, b;
  CHECK_STATUS(h_call_start(c2, DYN_ROUTE_RANDOM, 0, "1000 20 clientfree", &a, NULL), DYN_OK);
  CHECK_STATUS(h_call_start(c2, DYN_ROUTE_RANDOM, 0, "1000 20 clientfree2", &b, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(a.ndata >= 1 && b.ndata >= 1, 3000, rt));
  dyn_client_free(c2);
  CHECK(a.done == 1 && b.done == 1);
  CHECK_STATUS(a.status, DYN_ECANCELED);
  CHECK_STATUS(b.status, DYN_ECANCELED);
  CHECK(PUMP_UNTIL(saw("clientfree") >= 0 && saw("clientfree2") >= 0, 2000, rt));
}

/* Cancelling from inside on_data: the frames behind it are dropped. */
typedef struct incb {
  int ndata, done, status;
} incb_t;
static void incb_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  incb_t *x = ud;
  if (++x->ndata == 3) dyn_stream_cancel(s);
}
static void incb_done(dyn_stream_t *s, int status, const char *msg, void *ud) {
  incb_t *x = ud;
  x->done++;
  x->status = status;
}

static void test_cancel_in_callback(void) {
  static const dyn_stream_callbacks_t cb = {incb_data, incb_done};
  incb_t x = {0};
  /* No delay: every message arrives in one burst, behind the cancel. */
  CHECK_STATUS(dyn_client_generate(c, NULL, "50 0 incb", 9, &cb, &x, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(x.done, 3000, rt));
  PUMP_FOR(50, rt);
  CHECK_EQ_INT(x.done, 1);
  CHECK_EQ_INT(x.ndata, 3);
  CHECK_STATUS(x.status, DYN_ECANCELED);

  incb_t y = {0};
  CHECK_STATUS(dyn_client_generate(c, NULL, "1000 10 incb2", 13, &cb, &y, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(y.done, 3000, rt));
  CHECK_EQ_INT(y.ndata, 3);
  CHECK(PUMP_UNTIL(saw("incb2") >= 0, 2000, rt));
}

/* Cancelling a request still waiting for an instance. */
static void test_cancel_pending(void) {
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "cancel-none/echo/generate", &ep) == DYN_OK);
  dyn_client_t *c3;
  REQUIRE(dyn_endpoint_client(ep, &c3) == DYN_OK);
  dyn_client_set_wait(c3, 5000);
  h_call_t hc;
  dyn_stream_t *s;
  CHECK_STATUS(h_call_start(c3, DYN_ROUTE_RANDOM, 0, "1 0 p", &hc, &s), DYN_OK);
  CHECK_STATUS(dyn_client_wait(c3, 0, 3000), DYN_OK);
  CHECK_EQ_INT(hc.done, 0);
  dyn_stream_cancel(s);
  CHECK_EQ_INT(hc.done, 1);
  CHECK_STATUS(hc.status, DYN_ECANCELED);
  /* Its wait timer must not fire for a freed stream. */
  CHECK_STATUS(h_call_start(c3, DYN_ROUTE_RANDOM, 0, "1 0 q", &hc, &s), DYN_OK);
  dyn_client_free(c3); /* cancels it */
  CHECK_EQ_INT(hc.done, 1);
  PUMP_FOR(50, rt);
}

/* The caller vanishes mid-stream (its connection closes). */
static void test_caller_gone(void) {
  int fd = h_tcp_connect(w.addr);
  REQUIRE(fd >= 0);
  CHECK_EQ_INT(h_send_hello(fd, 1), 0);
  CHECK_EQ_INT(h_send_request(fd, 1, "cancel/echo/generate", "1000 20 gone"), 0);
  h_frame_t f;
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 1); /* HELLO */
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 3); /* DATA */
  CHECK_EQ_STR(f.payload, "gone-0");
  close(fd);
  CHECK(PUMP_UNTIL(saw("gone") >= 0, 2000, rt));

  /* A CANCEL frame on a raw connection, for a stream and for nothing. */
  fd = h_tcp_connect(w.addr);
  REQUIRE(fd >= 0);
  h_send_hello(fd, 1);
  h_send_request(fd, 7, "cancel/echo/generate", "1000 20 rawcancel");
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_STR(f.payload, "rawcancel-0");
  CHECK_EQ_INT(h_send_frame(fd, 6, 0, 7, 0, NULL, 0), 0);
  CHECK_EQ_INT(h_send_frame(fd, 6, 0, 99, 0, NULL, 0), 0);
  CHECK(PUMP_UNTIL(saw("rawcancel") >= 0, 2000, rt));
  /* The connection is still good for another request. */
  h_send_request(fd, 8, "cancel/echo/generate", "2 0 after");
  int data = 0, end = 0;
  for (int i = 0; i < 50 && !end; i++) {
    if (h_read_frame(fd, &f, 3000) != 1) break;
    if (f.stream == 8 && f.type == 3) data++;
    if (f.stream == 8 && f.type == 4) end = 1;
  }
  CHECK_EQ_INT(data, 2);
  CHECK_EQ_INT(end, 1);
  close(fd);
}

/* An in-process handler that serves requests as a batch: when one is
 * cancelled it ends them all. Cancelling while the runtime walks the
 * requests of a closed connection (or of a shutdown) must cope with the
 * requests it has not reached yet being ended by that callback. */
enum { BATCH = 4 };
static dyn_request_t *batch[BATCH];
static int nbatch, batch_cancels;

static void batch_end_all(void) {
  for (int i = 0; i < BATCH; i++)
    if (batch[i]) {
      dyn_request_t *r = batch[i];
      batch[i] = NULL;
      dyn_request_fail(r, "batch cancelled");
    }
  nbatch = 0;
}
static void batch_cancel(dyn_request_t *req, void *ud) {
  batch_cancels++;
  batch_end_all();
}
static void batch_handler(dyn_request_t *req, const void *body, size_t len, void *ud) {
  if (nbatch >= BATCH) {
    dyn_request_fail(req, "batch full");
    return;
  }
  batch[nbatch++] = req;
  dyn_request_on_cancel(req, batch_cancel, NULL);
  dyn_request_send(req, "queued", 6);
}

static void test_batch_handler(void) {
  dyn_runtime_t *srv = h_runtime(NULL);
  REQUIRE(srv);
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(srv, "batch/svc/gen", &ep) == DYN_OK);
  REQUIRE(dyn_endpoint_serve(ep, batch_handler, NULL) == DYN_OK);
  char addr[96];
  snprintf(addr, sizeof addr, "%s", dyn_runtime_address(srv));

  for (int round = 0; round < 2; round++) {
    int fd = h_tcp_connect(addr);
    REQUIRE(fd >= 0);
    h_send_hello(fd, 1);
    for (uint32_t i = 1; i <= BATCH; i++) h_send_request(fd, i, "batch/svc/gen", "x");
    CHECK(PUMP_UNTIL(nbatch == BATCH, 3000, srv));
    CHECK_EQ_INT(dyn_runtime_inflight(srv), BATCH);
    PUMP_FOR(20, srv);
    if (round == 0) {
      /* The caller goes away. */
      close(fd);
      CHECK(PUMP_UNTIL(dyn_runtime_inflight(srv) == 0, 3000, srv));
    } else {
      /* The server shuts down with no grace. */
      int cancelled = dyn_runtime_shutdown(srv, 0);
      CHECK(cancelled >= 0);
      CHECK_EQ_INT(dyn_runtime_inflight(srv), 0);
      close(fd);
    }
    CHECK_EQ_INT(nbatch, 0);
  }
  CHECK_EQ_INT(batch_cancels, 2);
  dyn_runtime_destroy(srv);
}

int main(void) {
  h_init("cancel");
  REQUIRE(h_start_control() > 0);
  REQUIRE(h_start_worker("cancel", NULL, &w) == 0);
  rt = h_runtime(NULL);
  REQUIRE(rt);

  /* Subscribed once the probe, sent after it on the same session, is back. */
  dyn_subscription_t *sub, *probe;
  REQUIRE(dyn_subscribe(rt, "test.cancelled", on_event, NULL, &sub) == DYN_OK);
  REQUIRE(dyn_subscribe(rt, "probe.cancel", on_probe, NULL, &probe) == DYN_OK);
  CHECK_STATUS(dyn_publish(rt, "probe.cancel", "", 0), DYN_OK);
  REQUIRE(PUMP_UNTIL(probe_seen, 3000, rt));

  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "cancel/echo/generate", &ep) == DYN_OK);
  REQUIRE(dyn_endpoint_client(ep, &c) == DYN_OK);
  REQUIRE(dyn_client_wait(c, 1, 5000) == DYN_OK);

  test_stream_cancel();
  test_deadline();
  test_deadline_after_idle();
  test_sync_free();
  test_client_free();
  test_cancel_in_callback();
  test_cancel_pending();
  test_caller_gone();
  test_batch_handler();

  /* After all that, the worker serves as before. */
  h_call_t hc;
  CHECK_STATUS(h_call(rt, c, DYN_ROUTE_RANDOM, 0, "2 0 fine", &hc, 3000), DYN_OK);
  CHECK_STATUS(hc.status, DYN_OK);
  CHECK_EQ_INT(hc.ndata, 2);

  dyn_unsubscribe(sub);
  dyn_unsubscribe(probe);
  dyn_client_free(c);
  dyn_runtime_destroy(rt);
  TEST_END();
}
