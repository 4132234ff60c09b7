/* test_failover.c - instances failing under a client.
 *
 * kill -9 of a worker mid-stream: the stream ends with DYN_EDISCONNECTED
 * at once (measured) and the next requests go to the survivor. Connect
 * failures before anything was sent: the request moves to another
 * instance; with nowhere else to go it fails DYN_ECONNECT.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"

static dyn_runtime_t *rt;
static dyn_client_t *c;

static int all_done(const h_call_t *v, int n) {
  for (int i = 0; i < n; i++)
    if (!v[i].done) return 0;
  return 1;
}

/* Sequential calls that must all succeed on the instance `want`. */
static int calls_on(dyn_route_t route, int n, uint64_t want, const char *tag) {
  int good = 0;
  for (int i = 0; i < n; i++) {
    h_call_t hc;
    char body[32];
    snprintf(body, sizeof body, "2 0 %s%d", tag, i);
    int rc = h_call(rt, c, route, 0, body, &hc, 3000);
    if (rc == DYN_OK && hc.status == DYN_OK && hc.ndata == 2 && hc.instance == want)
      good++;
    else
      fprintf(stderr, "%s call %d: rc %d status %d (%s) on %" PRIx64 "\n", tag, i, rc,
              hc.status, hc.message, hc.instance);
  }
  return good;
}

static void test_kill_mid_stream(h_worker_t *a, h_worker_t *b) {
  enum { N = 10 };
  static h_call_t calls[N];
  for (int i = 0; i < N; i++) {
    char body[32];
    snprintf(body, sizeof body, "100 50 x%d", i);
    CHECK_STATUS(h_call_start(c, DYN_ROUTE_DIRECT, a->id, body, &calls[i], NULL), DYN_OK);
  }
  /* A blocking stream on A as well. */
  dyn_call_options_t o = {DYN_ROUTE_DIRECT, a->id, 0, 0};
  dyn_sync_stream_t *ss;
  CHECK_STATUS(dyn_client_call(c, &o, "100 50 sync", 11, &ss), DYN_OK);
  CHECK(PUMP_UNTIL(calls[0].ndata >= 3, 3000, rt));
  CHECK(calls[0].instance == 0 || calls[0].instance == a->id);

  double t0 = h_now_ms_f();
  kill(a->pid, SIGKILL);
  CHECK(PUMP_UNTIL(all_done(calls, N), 3000, rt));
  double ms = calls[0].t_done - t0;
  printf("measured: stream error %.2f ms after SIGKILL of its worker\n", ms);
  CHECK_MSG(calls[0].done && ms < 1000.0, "stream ended after %.1f ms", ms);
  int disc = 0;
  for (int i = 0; i < N; i++) disc += calls[i].status == DYN_EDISCONNECTED;
  CHECK_EQ_INT(disc, N);
  CHECK_STATUS(calls[0].status, DYN_EDISCONNECTED);
  CHECK_MSG(strstr(calls[0].message, "disconnected") != NULL, "message: %s", calls[0].message);
  CHECK(calls[0].ndata >= 3 && calls[0].ndata < 100);
  CHECK_EQ_U64(calls[0].instance, a->id);

  /* The blocking stream: its messages so far, then the error. */
  const void *data;
  size_t len;
  int rc, n = 0;
  while ((rc = dyn_sync_next(ss, &data, &len, 3000)) == DYN_OK) n++;
  CHECK_STATUS(rc, DYN_EDISCONNECTED);
  CHECK(n >= 1 && n < 100);
  CHECK(strstr(dyn_sync_error(ss), "disconnected") != NULL);
  dyn_sync_free(ss);

  /* The very next requests, whether or not discovery has caught up yet,
   * are served by the survivor. */
  CHECK_EQ_INT(calls_on(DYN_ROUTE_ROUND_ROBIN, 6, b->id, "rr"), 6);
  CHECK_EQ_INT(calls_on(DYN_ROUTE_RANDOM, 6, b->id, "rnd"), 6);
  CHECK(PUMP_UNTIL(dyn_client_instances(c, NULL, 0) == 1, 1000, rt));
  uint64_t id = 0;
  dyn_client_instances(c, &id, 1);
  CHECK_EQ_U64(id, b->id);
  /* Direct to the dead one, once its DELETE arrived (the live list above
   * left it out already, as suspect): not live any more. */
  PUMP_FOR(300, rt);
  h_call_t hc;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_DIRECT, a->id, "1 0 z", &hc, NULL), DYN_ENOINSTANCE);
  CHECK_EQ_INT(h_wait_exit(a->pid, 2000, NULL), 0);
}

static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) ||
      getsockname(fd, (struct sockaddr *)&sa, &len))
    return -1;
  close(fd); /* bound, never listened: connecting is refused */
  return ntohs(sa.sin_port);
}

static void put_instance(dyn_runtime_t *r, uint64_t id, const char *value) {
  char key[128];
  snprintf(key, sizeof key, "instances/failover/echo/generate:%" PRIx64, id);
  CHECK_STATUS(dyn_discovery_put(r, key, value), DYN_OK);
}

static void test_connect_failure(h_worker_t *b) {
  int port = closed_port();
  REQUIRE(port > 0);
  dyn_runtime_t *rt2 = h_runtime(NULL);
  REQUIRE(rt2);
  const uint64_t fake = 0xfa4e0000000001ull, junk = 0xfa4e0000000002ull,
                 bad = 0xfa4e0000000003ull;
  char value[200];
  snprintf(value, sizeof value, "{\"address\":\"127.0.0.1:%d\",\"instance_id\":\"%" PRIu64 "\"}",
           port, fake);
  put_instance(rt2, fake, value);
  put_instance(rt2, junk, "{\"address\":\"no-such-host\",\"instance_id\":\"1\"}");
  put_instance(rt2, bad, "not json"); /* ignored, with a warning */
  CHECK(PUMP_UNTIL(dyn_client_instances(c, NULL, 0) == 3, 3000, rt, rt2));

  /* Every request lands on the live one, whatever the route tried first. */
  CHECK_EQ_INT(calls_on(DYN_ROUTE_ROUND_ROBIN, 20, b->id, "crr"), 20);
  CHECK_EQ_INT(calls_on(DYN_ROUTE_RANDOM, 20, b->id, "crnd"), 20);
  /* Many at once: several wait on the same failing connection. */
  enum { N = 40 };
  static h_call_t many[N];
  for (int i = 0; i < N; i++)
    CHECK_STATUS(h_call_start(c, i % 2 ? DYN_ROUTE_RANDOM : DYN_ROUTE_ROUND_ROBIN, 0, "3 0 m",
                              &many[i], NULL),
                 DYN_OK);
  CHECK(PUMP_UNTIL(all_done(many, N), 3000, rt));
  int ok = 0;
  for (int i = 0; i < N; i++)
    ok += many[i].status == DYN_OK && many[i].ndata == 3 && many[i].instance == b->id;
  CHECK_EQ_INT(ok, N);

  /* Direct to the unreachable one: nowhere else to go. */
  h_call_t hc;
  CHECK_STATUS(h_call(rt, c, DYN_ROUTE_DIRECT, fake, "1 0 d", &hc, 3000), DYN_OK);
  CHECK_STATUS(hc.status, DYN_ECONNECT);
  CHECK_MSG(strstr(hc.message, "connect") != NULL, "message: %s", hc.message);

  /* Only unreachable instances left: DYN_ECONNECT, promptly. Their failed
   * connects made them suspect, so the live list leaves them out already
   * (routing still tries them when nothing else is left). */
  h_kill9(b->pid);
  CHECK(PUMP_UNTIL(dyn_client_instances(c, NULL, 0) == 0, 2000, rt, rt2));
  double t0 = h_now_ms_f();
  CHECK_STATUS(h_call(rt, c, DYN_ROUTE_ROUND_ROBIN, 0, "1 0 e", &hc, 3000), DYN_OK);
  CHECK_STATUS(hc.status, DYN_ECONNECT);
  CHECK_LE_INT((long long)(hc.t_done - t0), 1000);

  /* Their owner goes: nothing is live. */
  dyn_runtime_destroy(rt2);
  /* The live list is empty already (suspects); the registrations' DELETEs
   * follow within milliseconds. */
  PUMP_FOR(300, rt);
  CHECK_EQ_INT(dyn_client_instances(c, NULL, 0), 0);
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_RANDOM, 0, "1 0 n", &hc, NULL), DYN_ENOINSTANCE);
}

/* A connection that the instance reset, not yet noticed by the client,
 * and then a request big enough to be written at once: the write fails
 * inside dyn_client_generate. The stream must end with an error through
 * on_done, and nothing may touch it after. A fake instance (this test) does
 * the handshake by hand and resets the connection. */
static void test_reset_then_large(void) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t slen = sizeof sa;
  REQUIRE(lfd >= 0 && !bind(lfd, (struct sockaddr *)&sa, sizeof sa) && !listen(lfd, 4) &&
          !getsockname(lfd, (struct sockaddr *)&sa, &slen));
  char value[200];
  const uint64_t id = 0x4e5e7000000001ull;
  snprintf(value, sizeof value, "{\"address\":\"127.0.0.1:%d\",\"instance_id\":\"%" PRIu64 "\"}",
           ntohs(sa.sin_port), id);
  CHECK_STATUS(dyn_discovery_put(rt, "instances/failover-rst/echo/generate:4e5e7000000001",
                                 value),
               DYN_OK);
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "failover-rst/echo/generate", &ep) == DYN_OK);
  dyn_client_t *rst;
  REQUIRE(dyn_endpoint_client(ep, &rst) == DYN_OK);
  REQUIRE(dyn_client_wait(rst, 1, 3000) == DYN_OK);

  h_call_t first, big;
  CHECK_STATUS(h_call_start(rst, DYN_ROUTE_RANDOM, 0, "small", &first, NULL), DYN_OK);
  int afd = -1;
  CHECK(PUMP_UNTIL((afd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0, 3000,
                   rt));
  REQUIRE(afd >= 0);
  int fl = fcntl(afd, F_GETFL);
  fcntl(afd, F_SETFL, fl & ~O_NONBLOCK);
  PUMP_FOR(20, rt);
  h_frame_t f;
  CHECK_EQ_INT(h_read_frame(afd, &f, 2000), 1); /* HELLO */
  CHECK_EQ_INT(f.type, 1);
  CHECK_EQ_INT(h_read_frame(afd, &f, 2000), 1); /* REQUEST "small" */
  CHECK_EQ_INT(f.type, 2);
  uint8_t hello[16] = {'D', 'Y', 'N', 'M', 1, 0, 2, 0, 1};
  CHECK_EQ_INT(h_send_frame(afd, 1, 0, 0, sizeof hello, hello, sizeof hello), 0);
  PUMP_FOR(20, rt);
  CHECK_EQ_INT(first.done, 0);

  /* Reset, and give the client no loop pass to notice. */
  struct linger lg = {1, 0};
  setsockopt(afd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(afd);
  h_sleep_ms(20);
  size_t n = 512 * 1024;
  char *body = malloc(n);
  REQUIRE(body);
  memset(body, 'b', n);
  memset(&big, 0, sizeof big);
  dyn_call_options_t o = {DYN_ROUTE_RANDOM, 0, 5000, 0};
  int rc = dyn_client_generate(rst, &o, body, n, &h_call_cb, &big, NULL);
  free(body);
  CHECK(rc == DYN_OK || rc == DYN_EDISCONNECTED);
  if (rc == DYN_OK) {
    CHECK(PUMP_UNTIL(big.done, 3000, rt));
    CHECK_EQ_INT(big.done, 1);
    CHECK(big.status != DYN_OK);
  }
  CHECK(PUMP_UNTIL(first.done, 3000, rt));
  CHECK_STATUS(first.status, DYN_EDISCONNECTED);
  PUMP_FOR(20, rt);
  dyn_client_free(rst);
  dyn_discovery_delete(rt, "instances/failover-rst/echo/generate:4e5e7000000001");
  close(lfd);
}

/* When a connection dies, on_done of one of its streams may end others on
 * it (cancel a sibling, free the whole client): the rest must still end
 * exactly once, with nothing touched after it was freed. */
typedef struct sib {
  dyn_stream_t *self, *sibling;
  int done, status;
  struct sib *other;
} sib_t;

static void sib_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {}
static dyn_client_t *free_from_done; /* the first on_done frees it */
static void sib_done(dyn_stream_t *s, int status, const char *msg, void *ud) {
  sib_t *x = ud;
  x->done++;
  x->status = status;
  if (free_from_done) {
    dyn_client_t *fc = free_from_done;
    free_from_done = NULL;
    dyn_client_free(fc);
  } else if (x->other && !x->other->done) {
    dyn_stream_cancel(x->other->self);
  }
}

static void test_done_ends_siblings(void) {
  static const dyn_stream_callbacks_t cb = {sib_data, sib_done};
  for (int variant = 0; variant < 2; variant++) {
    h_worker_t w;
    REQUIRE(h_start_worker("failover-sib", NULL, &w) == 0);
    dyn_endpoint_t *ep;
    REQUIRE(dyn_runtime_endpoint(rt, "failover-sib/echo/generate", &ep) == DYN_OK);
    dyn_client_t *sc;
    REQUIRE(dyn_endpoint_client(ep, &sc) == DYN_OK);
    REQUIRE(dyn_client_wait(sc, 1, 3000) == DYN_OK);
    enum { K = 6 };
    sib_t x[K];
    memset(x, 0, sizeof x);
    for (int i = 0; i < K; i++) {
      x[i].other = &x[(i + 1) % K];
      CHECK_STATUS(dyn_client_generate(sc, NULL, "100 20 sib", 10, &cb, &x[i], &x[i].self),
                   DYN_OK);
    }
    PUMP_FOR(60, rt);
    free_from_done = variant == 1 ? sc : NULL;
    h_kill9(w.pid);
    CHECK(PUMP_UNTIL(({
                       int all = 1;
                       for (int i = 0; i < K; i++) all &= x[i].done > 0;
                       all;
                     }),
                     3000, rt));
    PUMP_FOR(20, rt);
    int once = 0;
    for (int i = 0; i < K; i++) once += x[i].done == 1;
    CHECK_MSG(once == K, "variant %d: %d of %d streams ended exactly once", variant, once, K);
    if (variant == 0) dyn_client_free(sc);
  }
}

/* A worker crashed but is still listed (an etcd lease outlives it) and is
 * being restarted: a request with a wait budget tries the dead one, then
 * waits for the new instance instead of failing. */
static void test_wait_after_dead(void) {
  int port = closed_port();
  REQUIRE(port > 0);
  dyn_runtime_t *rt2 = h_runtime(NULL);
  REQUIRE(rt2);
  dyn_endpoint_t *ep;
  dyn_client_t *cw;
  REQUIRE(dyn_runtime_endpoint(rt, "failover2/echo/generate", &ep) == DYN_OK);
  REQUIRE(dyn_endpoint_client(ep, &cw) == DYN_OK);
  dyn_client_set_wait(cw, 5000);
  char key[128], value[160];
  snprintf(key, sizeof key, "instances/failover2/echo/generate:%" PRIx64, (uint64_t)0xdeadull);
  snprintf(value, sizeof value, "{\"address\":\"127.0.0.1:%d\",\"instance_id\":\"57005\"}", port);
  CHECK_STATUS(dyn_discovery_put(rt2, key, value), DYN_OK);
  CHECK(PUMP_UNTIL(dyn_client_instances(cw, NULL, 0) == 1, 3000, rt, rt2));
  h_call_t hc;
  double t0 = h_now_ms_f();
  CHECK_STATUS(h_call_start(cw, DYN_ROUTE_ROUND_ROBIN, 0, "1 0 back", &hc, NULL), DYN_OK);
  PUMP_FOR(200, rt, rt2);
  CHECK_EQ_INT(hc.done, 0); /* the dead one refused; it waits */
  h_worker_t w;
  REQUIRE(h_start_worker("failover2", NULL, &w) == 0);
  CHECK(PUMP_UNTIL(hc.done, 5000, rt, rt2));
  CHECK_STATUS(hc.status, DYN_OK);
  CHECK_EQ_U64(hc.instance, w.id);
  printf("measured: served by the restarted worker %.0f ms after the call\n", hc.t_done - t0);
  h_kill9(w.pid);
  dyn_client_free(cw);
  dyn_runtime_destroy(rt2);
}

/* A failure found while dyn_client_generate dispatches (the only instance
 * has an address nothing can connect to) reaches on_done from the loop, not
 * inside the call: callers set up their state after it returns. */
static void test_failure_is_never_reported_inside_generate(void) {
  dyn_runtime_t *rt2 = h_runtime(NULL);
  REQUIRE(rt2);
  CHECK_STATUS(dyn_discovery_put(rt2, "instances/failover-sync/echo/generate:5e",
                                 "{\"address\":\"no-such-host\",\"instance_id\":\"94\"}"),
               DYN_OK);
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "failover-sync/echo/generate", &ep) == DYN_OK);
  dyn_client_t *cs;
  REQUIRE(dyn_endpoint_client(ep, &cs) == DYN_OK);
  CHECK(PUMP_UNTIL(dyn_client_instances(cs, NULL, 0) == 1, 3000, rt, rt2));
  h_call_t hc;
  dyn_stream_t *s = NULL;
  CHECK_STATUS(h_call_start(cs, DYN_ROUTE_RANDOM, 0, "x", &hc, &s), DYN_OK);
  CHECK(s != NULL);
  CHECK_EQ_INT(hc.done, 0); /* not yet: the caller still holds s */
  CHECK(PUMP_UNTIL(hc.done, 2000, rt));
  CHECK_STATUS(hc.status, DYN_ECONNECT);
  /* And a cancel before the loop reports it ends the stream just once. */
  CHECK_STATUS(h_call_start(cs, DYN_ROUTE_RANDOM, 0, "y", &hc, &s), DYN_OK);
  CHECK_EQ_INT(hc.done, 0);
  dyn_stream_cancel(s);
  CHECK_EQ_INT(hc.done, 1);
  CHECK_STATUS(hc.status, DYN_ECANCELED);
  PUMP_FOR(50, rt);
  CHECK_EQ_INT(hc.done, 1);
  dyn_client_free(cs);
  dyn_runtime_destroy(rt2);
}

int main(void) {
  h_init("failover");
  REQUIRE(h_start_control() > 0);
  h_worker_t a, b;
  REQUIRE(h_start_worker("failover", NULL, &a) == 0);
  REQUIRE(h_start_worker("failover", NULL, &b) == 0);
  rt = h_runtime(NULL);
  REQUIRE(rt);
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "failover/echo/generate", &ep) == DYN_OK);
  REQUIRE(dyn_endpoint_client(ep, &c) == DYN_OK);
  REQUIRE(dyn_client_wait(c, 2, 5000) == DYN_OK);

  test_kill_mid_stream(&a, &b);
  test_connect_failure(&b);
  test_reset_then_large();
  test_done_ends_siblings();
  test_wait_after_dead();
  test_failure_is_never_reported_inside_generate();

  dyn_client_free(c);
  dyn_runtime_destroy(rt);
  TEST_END();
}
