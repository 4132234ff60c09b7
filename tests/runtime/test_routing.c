/* test_routing.c - choosing an instance: round robin, random, direct; no
 * instance at all (an immediate, clear error); waiting for one. Two
 * echo_worker processes serve route/echo/generate. */
#include "harness.h"

static dyn_runtime_t *rt;

static dyn_client_t *client_for(const char *path) {
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, path, &ep) == DYN_OK);
  dyn_client_t *c;
  REQUIRE(dyn_endpoint_client(ep, &c) == DYN_OK);
  return c;
}

static void test_instances(dyn_client_t *c, const h_worker_t *a, const h_worker_t *b) {
  uint64_t ids[4] = {0};
  CHECK_EQ_INT(dyn_client_instances(c, ids, 4), 2);
  CHECK((ids[0] == a->id && ids[1] == b->id) || (ids[0] == b->id && ids[1] == a->id));
  /* A short buffer still reports how many are live. */
  uint64_t one = 0;
  CHECK_EQ_INT(dyn_client_instances(c, &one, 1), 2);
  CHECK(one == a->id || one == b->id);
}

static void test_round_robin(dyn_client_t *c, const h_worker_t *a, const h_worker_t *b) {
  uint64_t got[12];
  int ok = 1;
  for (int i = 0; i < 12; i++) {
    h_call_t hc;
    char body[32];
    snprintf(body, sizeof body, "2 0 rr%d", i);
    int rc = h_call(rt, c, DYN_ROUTE_ROUND_ROBIN, 0, body, &hc, 3000);
    if (rc || hc.status != DYN_OK || hc.ndata != 2) {
      ok = 0;
      fprintf(stderr, "rr call %d: rc %d status %d (%s) ndata %d\n", i, rc, hc.status,
              hc.message, hc.ndata);
    } else {
      char want[32];
      snprintf(want, sizeof want, "rr%d-1", i);
      if (strcmp(hc.data[1], want)) ok = 0;
    }
    got[i] = hc.instance;
  }
  CHECK(ok);
  int alternates = 1;
  for (int i = 0; i < 12; i++) {
    if (got[i] != a->id && got[i] != b->id) alternates = 0;
    if (i && got[i] == got[i - 1]) alternates = 0;
  }
  CHECK_MSG(alternates, "round robin did not alternate between %" PRIx64 " and %" PRIx64,
            a->id, b->id);
}

static void test_random(dyn_client_t *c, const h_worker_t *a, const h_worker_t *b) {
  enum { N = 200 };
  static h_call_t calls[N];
  int started = 0;
  for (int i = 0; i < N; i++) {
    char body[32];
    snprintf(body, sizeof body, "1 0 rnd%d", i);
    if (h_call_start(c, DYN_ROUTE_RANDOM, 0, body, &calls[i], NULL) == DYN_OK) started++;
  }
  CHECK_EQ_INT(started, N);
  int done = 0;
  CHECK(PUMP_UNTIL(({
                     done = 0;
                     for (int i = 0; i < N; i++) done += calls[i].done;
                     done == N;
                   }),
                   5000, rt));
  int na = 0, nb = 0, ok = 0;
  for (int i = 0; i < N; i++) {
    na += calls[i].instance == a->id;
    nb += calls[i].instance == b->id;
    ok += calls[i].done == 1 && calls[i].status == DYN_OK && calls[i].ndata == 1;
  }
  CHECK_EQ_INT(ok, N);
  CHECK_EQ_INT(na + nb, N);
  printf("random: %d on A, %d on B\n", na, nb);
  CHECK_MSG(na >= 40 && nb >= 40, "random split %d/%d", na, nb);
}

static void test_direct(dyn_client_t *c, const h_worker_t *a, const h_worker_t *b) {
  int hits = 0;
  for (int i = 0; i < 20; i++) {
    h_call_t hc;
    const h_worker_t *w = i % 4 == 3 ? a : b;
    int rc = h_call(rt, c, DYN_ROUTE_DIRECT, w->id, "1 0 direct", &hc, 3000);
    hits += rc == DYN_OK && hc.status == DYN_OK && hc.instance == w->id && hc.ndata == 1;
  }
  CHECK_EQ_INT(hits, 20);

  /* An id nobody serves: refused at once, by both APIs. */
  h_call_t hc;
  uint64_t bogus = (a->id ^ b->id) | 1;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_DIRECT, bogus, "1 0 x", &hc, NULL), DYN_ENOINSTANCE);
  CHECK_EQ_INT(hc.done, 0); /* immediate failures call nothing */
  dyn_call_options_t o = {DYN_ROUTE_DIRECT, bogus, 0, 0};
  dyn_sync_stream_t *ss = NULL;
  CHECK_STATUS(dyn_client_call(c, &o, "1 0 x", 5, &ss), DYN_ENOINSTANCE);
  CHECK(ss == NULL);

  /* Bad arguments. */
  dyn_call_options_t bad = {(dyn_route_t)7, 0, 0, 0};
  CHECK_STATUS(dyn_client_generate(c, &bad, "x", 1, &h_call_cb, &hc, NULL), DYN_EINVAL);
  dyn_stream_callbacks_t nodone = {h_call_cb.on_data, NULL};
  CHECK_STATUS(dyn_client_generate(c, NULL, "x", 1, &nodone, &hc, NULL), DYN_EINVAL);
  CHECK_STATUS(dyn_client_generate(c, NULL, NULL, 3, &h_call_cb, &hc, NULL), DYN_EINVAL);
}

/* The blocking API against the same workers. */
static void test_sync_api(dyn_client_t *c) {
  dyn_sync_stream_t *ss;
  REQUIRE(dyn_client_call(c, NULL, "3 0 sync", 8, &ss) == DYN_OK);
  const void *data;
  size_t len;
  int ok = 1;
  for (int i = 0; i < 3; i++) {
    char want[16];
    snprintf(want, sizeof want, "sync-%d", i);
    if (dyn_sync_next(ss, &data, &len, 3000) != DYN_OK || len != strlen(want) ||
        memcmp(data, want, len))
      ok = 0;
  }
  CHECK(ok);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_EOF);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_EOF);
  dyn_sync_free(ss);

  REQUIRE(dyn_client_call(c, NULL, "failing", 7, &ss) == DYN_OK);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_EREMOTE);
  CHECK_EQ_STR(dyn_sync_error(ss), "failing");
  dyn_sync_free(ss);

  /* An empty body is a request too (the worker refuses it). */
  REQUIRE(dyn_client_call(c, NULL, NULL, 0, &ss) == DYN_OK);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_EREMOTE);
  CHECK(strstr(dyn_sync_error(ss), "bad request") != NULL);
  dyn_sync_free(ss);

  /* A timeout on a slow stream is not the end of it. */
  REQUIRE(dyn_client_call(c, NULL, "2 300 slow", 10, &ss) == DYN_OK);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 20), DYN_ETIMEDOUT);
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_OK);
  dyn_sync_free(ss); /* cancels the rest */
}

/* No instance at all: an immediate DYN_ENOINSTANCE. */
static void test_no_instance(void) {
  dyn_client_t *c = client_for("route-none/echo/generate");
  /* Before the first snapshot, a request waits for it, then fails. */
  dyn_sync_stream_t *ss;
  REQUIRE(dyn_client_call(c, NULL, "1 0 x", 5, &ss) == DYN_OK);
  const void *data;
  size_t len;
  uint64_t t0 = h_now_ms();
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_ENOINSTANCE);
  CHECK_LE_INT(h_now_ms() - t0, 1000);
  CHECK(strstr(dyn_sync_error(ss), "route-none/echo/generate") != NULL);
  dyn_sync_free(ss);

  CHECK_STATUS(dyn_client_wait(c, 0, 3000), DYN_OK);
  t0 = h_now_ms();
  ss = NULL;
  CHECK_STATUS(dyn_client_call(c, NULL, "1 0 x", 5, &ss), DYN_ENOINSTANCE);
  CHECK(ss == NULL);
  h_call_t hc;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_ROUND_ROBIN, 0, "1 0 x", &hc, NULL), DYN_ENOINSTANCE);
  CHECK_LE_INT(h_now_ms() - t0, 50);
  CHECK_EQ_INT(dyn_client_instances(c, NULL, 0), 0);
  CHECK_STATUS(dyn_client_wait(c, 1, 100), DYN_ETIMEDOUT);
  dyn_client_free(c);
}

static int changes;
static void on_change(dyn_client_t *c, void *ud) { changes++; }

/* With a wait, a request made before any worker runs is served once one
 * starts; with a short wait and no worker it fails after that wait. */
static void test_wait(void) {
  dyn_client_t *c = client_for("route-wait/echo/generate");
  dyn_client_on_change(c, on_change, NULL);
  CHECK_STATUS(dyn_client_wait(c, 0, 3000), DYN_OK);
  int changes0 = changes;

  dyn_client_set_wait(c, 200);
  h_call_t hc;
  double t0 = h_now_ms_f();
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_RANDOM, 0, "1 0 w", &hc, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  CHECK_STATUS(hc.status, DYN_ENOINSTANCE);
  double waited = hc.t_done - t0;
  printf("wait 200 ms, no worker: failed after %.1f ms\n", waited);
  CHECK_MSG(waited >= 180.0 && waited < 1000.0, "failed after %.1f ms", waited);
  CHECK(strstr(hc.message, "200 ms") != NULL);

  /* A deadline shorter than the wait ends the wait: DYN_ETIMEDOUT. */
  dyn_client_set_wait(c, 2000);
  dyn_call_options_t o = {DYN_ROUTE_RANDOM, 0, 150, 0};
  memset(&hc, 0, sizeof hc);
  t0 = h_now_ms_f();
  CHECK_STATUS(dyn_client_generate(c, &o, "1 0 d", 5, &h_call_cb, &hc, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  CHECK_STATUS(hc.status, DYN_ETIMEDOUT);
  waited = hc.t_done - t0;
  CHECK_MSG(waited >= 130.0 && waited < 1000.0, "deadline 150 ms ended the wait after %.1f ms",
            waited);

  t0 = h_now_ms_f();
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_RANDOM, 0, "2 0 waited", &hc, NULL), DYN_OK);
  PUMP_FOR(100, rt);
  CHECK_EQ_INT(hc.done, 0);
  h_worker_t w;
  REQUIRE(h_start_worker("route-wait", NULL, &w) == 0);
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  CHECK_STATUS(hc.status, DYN_OK);
  CHECK_EQ_INT(hc.ndata, 2);
  CHECK_EQ_STR(hc.data[1], "waited-1");
  CHECK_EQ_U64(hc.instance, w.id);
  CHECK_LE_INT((long long)(hc.t_done - t0), 2000);
  CHECK(changes > changes0);

  /* Several waiting at once, with the blocking API too. */
  h_kill9(w.pid);
  CHECK(PUMP_UNTIL(dyn_client_instances(c, NULL, 0) == 0, 2000, rt));
  PUMP_FOR(300, rt); /* the live list drops it at once (suspect); let the DELETE land too */
  h_call_t many[5];
  for (int i = 0; i < 5; i++)
    CHECK_STATUS(h_call_start(c, DYN_ROUTE_ROUND_ROBIN, 0, "1 0 m", &many[i], NULL), DYN_OK);
  dyn_sync_stream_t *ss;
  CHECK_STATUS(dyn_client_call(c, NULL, "1 0 blocking", 12, &ss), DYN_OK);
  REQUIRE(h_start_worker("route-wait", NULL, &w) == 0);
  const void *data;
  size_t len;
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_OK);
  CHECK(len == 10 && !memcmp(data, "blocking-0", 10));
  CHECK_STATUS(dyn_sync_next(ss, &data, &len, 3000), DYN_EOF);
  dyn_sync_free(ss);
  CHECK(PUMP_UNTIL(many[0].done && many[1].done && many[2].done && many[3].done && many[4].done,
                   3000, rt));
  int ok = 0;
  for (int i = 0; i < 5; i++) ok += many[i].status == DYN_OK && many[i].ndata == 1;
  CHECK_EQ_INT(ok, 5);
  h_kill9(w.pid);
  dyn_client_free(c);
}

/* The control plane goes away: the client's view resets. A request with a
 * wait must still end within that wait, not hang until the control plane
 * is back; once it is back, the workers re-register and calls flow. */
static void test_control_outage(dyn_client_t *c, pid_t *control) {
  h_kill9(*control);
  CHECK(PUMP_UNTIL(dyn_client_instances(c, NULL, 0) == 0, 2000, rt));
  dyn_client_set_wait(c, 300);
  h_call_t hc;
  double t0 = h_now_ms_f();
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_RANDOM, 0, "1 0 outage", &hc, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(hc.done, 3000, rt));
  double ms = hc.done ? hc.t_done - t0 : -1.0;
  CHECK_MSG(hc.done && hc.status == DYN_ENOINSTANCE && ms >= 250.0 && ms < 1500.0,
            "during the outage: done %d status %d after %.1f ms", hc.done, hc.status, ms);

  *control = h_start_control();
  REQUIRE(*control > 0);
  CHECK(PUMP_UNTIL(dyn_client_instances(c, NULL, 0) == 2, 3000, rt));
  CHECK_STATUS(h_call(rt, c, DYN_ROUTE_ROUND_ROBIN, 0, "1 0 back", &hc, 3000), DYN_OK);
  CHECK_STATUS(hc.status, DYN_OK);
  dyn_client_set_wait(c, 0);
}

int main(void) {
  h_init("routing");
  pid_t control = h_start_control();
  REQUIRE(control > 0);
  h_worker_t a, b;
  REQUIRE(h_start_worker("route", NULL, &a) == 0);
  REQUIRE(h_start_worker("route", NULL, &b) == 0);
  CHECK(a.id != b.id);
  rt = h_runtime(NULL);
  REQUIRE(rt);
  dyn_client_t *c = client_for("route/echo/generate");
  REQUIRE(dyn_client_wait(c, 2, 5000) == DYN_OK);

  test_instances(c, &a, &b);
  test_round_robin(c, &a, &b);
  test_random(c, &a, &b);
  test_direct(c, &a, &b);
  test_sync_api(c);
  test_no_instance();
  test_wait();
  test_control_outage(c, &control);

  dyn_client_free(c);
  dyn_runtime_destroy(rt);
  TEST_END();
}
