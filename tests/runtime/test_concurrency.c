/* test_concurrency.c - many concurrent streams on one connection.
 *
 * 1,000 streams at once through the callback API, driven by
 * dyn_runtime_run until the last on_done stops it: each must get exactly
 * its own messages, in order, and end DYN_OK. Then a mixed round (streams
 * that fail, get cancelled or succeed, interleaved) and rounds with large
 * request bodies that overflow the socket buffers.
 */
#include <dirent.h>

#include "harness.h"

enum { N = 1000 };

typedef struct st {
  int i;
  int want;     /* messages expected */
  int got;      /* messages seen in order */
  int bad;      /* messages out of order or foreign */
  int done;
  int status;
  int cancel_at; /* cancel after this many messages (0: never) */
  dyn_stream_t *s;
} st_t;

static dyn_runtime_t *rt;
static dyn_client_t *c;
static st_t st[N];
static int ndone, nexpect;
static uv_timer_t watchdog;

static void on_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  st_t *x = ud;
  char want[32];
  int n = snprintf(want, sizeof want, "s%d-%d", x->i, x->got);
  if ((size_t)n == len && !memcmp(data, want, len)) x->got++;
  else x->bad++;
  if (x->cancel_at && x->got == x->cancel_at) dyn_stream_cancel(s);
}

static void on_done(dyn_stream_t *s, int status, const char *msg, void *ud) {
  st_t *x = ud;
  x->done++;
  x->status = status;
  if (status == DYN_EREMOTE) {
    char want[32];
    snprintf(want, sizeof want, "fail%d", x->i);
    if (strcmp(msg, want)) x->bad++;
  }
  if (++ndone == nexpect) dyn_runtime_stop(rt);
}

static void on_watchdog(uv_timer_t *t) {
  fprintf(stderr, "test_concurrency: round did not finish in time\n");
  dyn_runtime_stop(rt);
}

static const dyn_stream_callbacks_t cb = {on_data, on_done};

/* Runs the loop until every stream of the round ended (20 s at most);
 * returns the ms since t0 (taken before the requests were made). */
static double run_round(double t0) {
  uv_timer_start(&watchdog, on_watchdog, 20000, 0);
  dyn_runtime_run(rt);
  uv_timer_stop(&watchdog);
  return h_now_ms_f() - t0;
}

/* TCP and Unix sockets this process holds open. */
static int count_sockets(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char path[300], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t k = readlink(path, target, sizeof target - 1);
    if (k > 0) {
      target[k] = 0;
      n += !strncmp(target, "socket:", 7);
    }
  }
  closedir(d);
  return n;
}

static void test_thousand(void) {
  memset(st, 0, sizeof st);
  ndone = 0;
  nexpect = N;
  int started = 0;
  double t0 = h_now_ms_f();
  for (int i = 0; i < N; i++) {
    char body[32];
    int n = snprintf(body, sizeof body, "5 0 s%d", i);
    st[i].i = i;
    st[i].want = 5;
    started += dyn_client_generate(c, NULL, body, (size_t)n, &cb, &st[i], NULL) == DYN_OK;
  }
  CHECK_EQ_INT(started, N);
  double ms = run_round(t0);
  printf("1000 concurrent streams x 5 messages: %.1f ms\n", ms);
  int ok = 0, bad = 0, done = 0;
  for (int i = 0; i < N; i++) {
    ok += st[i].done == 1 && st[i].status == DYN_OK && st[i].got == 5 && !st[i].bad;
    bad += st[i].bad;
    done += st[i].done;
  }
  CHECK_EQ_INT(done, N);
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(ok, N);
  /* One control session and one connection to the worker, no more. */
  CHECK_EQ_INT(count_sockets(), 2);
}

/* Successes, handler failures and cancellations, interleaved. */
static void test_mixed(void) {
  memset(st, 0, sizeof st);
  ndone = 0;
  nexpect = N;
  for (int i = 0; i < N; i++) {
    char body[32];
    int n;
    st[i].i = i;
    switch (i % 4) {
      case 0: /* fails in the handler */
        n = snprintf(body, sizeof body, "fail%d", i);
        break;
      case 1: /* cancelled by the caller after 2 of 20 */
        st[i].cancel_at = 2;
        n = snprintf(body, sizeof body, "20 1 s%d", i);
        break;
      case 2: /* empty stream */
        n = snprintf(body, sizeof body, "0 0 s%d", i);
        break;
      default:
        st[i].want = i % 7 + 1;
        n = snprintf(body, sizeof body, "%d %d s%d", st[i].want, i % 3, i);
    }
    dyn_client_generate(c, NULL, body, (size_t)n, &cb, &st[i], &st[i].s);
  }
  run_round(h_now_ms_f());
  int ok = 0, printed = 0;
  for (int i = 0; i < N; i++) {
    const st_t *x = &st[i];
    int good = x->done == 1 && !x->bad;
    switch (i % 4) {
      case 0: good = good && x->status == DYN_EREMOTE && x->got == 0; break;
      case 1: good = good && x->status == DYN_ECANCELED && x->got == 2; break;
      case 2: good = good && x->status == DYN_OK && x->got == 0; break;
      default: good = good && x->status == DYN_OK && x->got == x->want;
    }
    if (!good && printed++ < 5)
      fprintf(stderr, "stream %d: done %d status %d got %d bad %d\n", i, x->done, x->status,
              x->got, x->bad);
    ok += good;
  }
  CHECK_EQ_INT(ok, N);
}

/* Request bodies of body_len bytes, m streams: far past what the socket takes
 * at once, so writes queue and complete piecewise. Bodies of 1 MiB are
 * written from the caller's memory while the connection is idle, partly,
 * the rest queued behind (conn.c write_direct), and read a frame at a
 * time on the other side: a frame torn or out of order would fail every
 * stream after it. */
static void big_bodies(int m, size_t body_len) {
  char *body = malloc(body_len);
  REQUIRE(body);
  memset(st, 0, sizeof st);
  ndone = 0;
  nexpect = m;
  double t0 = h_now_ms_f();
  for (int i = 0; i < m; i++) {
    memset(body, '.', body_len);
    int n = snprintf(body, body_len, "3 0 s%d ", i);
    body[n] = ' '; /* the worker reads the first three fields only */
    st[i].i = i;
    dyn_client_generate(c, NULL, body, body_len, &cb, &st[i], NULL);
  }
  free(body);
  double ms = run_round(t0);
  printf("%d streams with %zu KiB bodies: %.1f ms\n", m, body_len / 1024, ms);
  int ok = 0;
  for (int i = 0; i < m; i++) ok += st[i].done == 1 && st[i].status == DYN_OK && st[i].got == 3;
  CHECK_EQ_INT(ok, m);
}

/* The blocking API, many streams open at once, read round-robin. */
static void test_sync_many(void) {
  enum { K = 100 };
  dyn_sync_stream_t *ss[K];
  for (int i = 0; i < K; i++) {
    char body[32];
    int n = snprintf(body, sizeof body, "4 1 s%d", i);
    REQUIRE(dyn_client_call(c, NULL, body, (size_t)n, &ss[i]) == DYN_OK);
  }
  int ok = 0;
  for (int round = 0; round < 5; round++)
    for (int i = 0; i < K; i++) {
      const void *data;
      size_t len;
      int rc = dyn_sync_next(ss[i], &data, &len, 5000);
      char want[32];
      snprintf(want, sizeof want, "s%d-%d", i, round);
      if (round < 4) ok += rc == DYN_OK && len == strlen(want) && !memcmp(data, want, len);
      else ok += rc == DYN_EOF;
    }
  CHECK_EQ_INT(ok, 5 * K);
  for (int i = 0; i < K; i++) dyn_sync_free(ss[i]);
}

int main(void) {
  h_init("concurrency");
  REQUIRE(h_start_control() > 0);
  h_worker_t w;
  REQUIRE(h_start_worker("conc", NULL, &w) == 0);
  rt = h_runtime(NULL);
  REQUIRE(rt);
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "conc/echo/generate", &ep) == DYN_OK);
  REQUIRE(dyn_endpoint_client(ep, &c) == DYN_OK);
  REQUIRE(dyn_client_wait(c, 1, 5000) == DYN_OK);
  uv_timer_init(dyn_runtime_loop(rt), &watchdog);

  test_thousand();
  test_mixed();
  big_bodies(300, 64 * 1024);
  big_bodies(48, 1024 * 1024);
  test_sync_many();
  test_thousand(); /* and the connection is still good */

  uv_close((uv_handle_t *)&watchdog, NULL);
  dyn_client_free(c);
  dyn_runtime_destroy(rt);
  TEST_END();
}
