/* test_nats_events.c - the NATS events backend against a real nats-server.
 *
 * Starts `nats-server -a 127.0.0.1 -p PORT` on a free port and drives
 * backend instances on bare runtimes of their own (a loop, the events front
 * and the NATS backend; no control plane, no listener). Checks: wildcards
 * and component subjects across two connections, payload bytes kept
 * exactly, unsubscribe (also from inside a callback), callbacks on the
 * loop's thread (a subscriber driven by a thread of its own), an outage
 * (server killed: publishes dropped, counted, never blocking, one warning
 * per connection; server restarted on the same port: subscriptions back,
 * events flowing), a stalled server (SIGSTOP: noticed by PINGs, publishing
 * and subscribing never wait), a failed open naming the URL, publishing from inside a
 * callback, a burst larger than the socket buffers, events published just
 * before closing still delivered, no descriptor left
 * open, and the publish->deliver latency and the round trip (p50 and p99
 * of 1000 events, printed). Every wait is bounded.
 * Prints "N passed, N failed"; fails without nats-server.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/internal.h"
#include "runtime/nats/nats_events.h"

/* ---- a tiny harness ----------------------------------------------------- */

static int passed, failed;

#define CHECK_MSG(cond, ...)                                              \
  do {                                                                    \
    if (cond) {                                                           \
      passed++;                                                           \
    } else {                                                              \
      failed++;                                                           \
      fprintf(stderr, "%s:%d: FAILED: CHECK(%s): ", __FILE__, __LINE__,   \
              #cond);                                                     \
      fprintf(stderr, __VA_ARGS__);                                       \
      fputc('\n', stderr);                                                \
    }                                                                     \
  } while (0)
#define CHECK(cond) CHECK_MSG(cond, "%s", "")
#define CHECK_STATUS(a, b)                                                  \
  do {                                                                      \
    int a_ = (a), b_ = (b);                                                 \
    CHECK_MSG(a_ == b_, "%d (%s) != %d (%s)", a_, dyn_strerror(a_), b_,     \
              dyn_strerror(b_));                                            \
  } while (0)

static int summary(void) {
  printf("%d passed, %d failed\n", passed, failed);
  fflush(stdout);
  return failed ? 1 : 0;
}

/* Stops the test when nothing after cond could mean anything. */
#define REQUIRE(cond)                                                     \
  do {                                                                    \
    int ok_ = !!(cond); /* once: cond may start things */                \
    CHECK_MSG(ok_, "%s", "stopping");                                     \
    if (!ok_) exit(summary() | 1);                                        \
  } while (0)

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* ---- nats-server -------------------------------------------------------- */

static char server_bin[512];
static pid_t server_pid = -1;
static int port;
static char url[64];
static char tmpdir[64] = "/tmp/dyn-nats-XXXXXX";
static char server_log[128];

/* NATS_SERVER_BIN names the binary; NATS_SERVER is the runtime's URL. */
static int find_server(void) {
  const char *env = getenv("NATS_SERVER_BIN");
  if (env && *env) {
    snprintf(server_bin, sizeof server_bin, "%s", env);
    return access(server_bin, X_OK) == 0;
  }
  /* Debian installs it in /usr/sbin, which a user's PATH may lack. */
  char dirs[2048];
  const char *path = getenv("PATH");
  snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin:/usr/local/bin:/usr/bin:/sbin",
           path ? path : "");
  for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    snprintf(server_bin, sizeof server_bin, "%s/nats-server", d);
    if (access(server_bin, X_OK) == 0) return 1;
  }
  return 0;
}

/* A port nobody listens on now (another process could take it before the
 * server does; unlikely enough on a test machine). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t n = sizeof sa;
  int p = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &n) == 0)
    p = ntohs(sa.sin_port);
  if (fd >= 0) close(fd);
  return p;
}

static int port_open(int p) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

/* Starts nats-server on port and waits (5 s at most) until it listens. */
static int server_start(void) {
  char p[16];
  snprintf(p, sizeof p, "%d", port);
  fflush(stdout);
  fflush(stderr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int fd = open(server_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execl(server_bin, "nats-server", "-a", "127.0.0.1", "-p", p, (char *)NULL);
    _exit(127);
  }
  server_pid = pid;
  double end = now_ms() + 5000;
  while (now_ms() < end) {
    if (port_open(port)) return 0;
    if (waitpid(pid, NULL, WNOHANG) == pid) {
      server_pid = -1;
      fprintf(stderr, "nats-server exited at start (see %s)\n", server_log);
      return -1;
    }
    sleep_ms(5);
  }
  fprintf(stderr, "nats-server did not listen within 5 s\n");
  return -1;
}

static void server_kill(void) {
  if (server_pid <= 0) return;
  kill(server_pid, SIGKILL);
  waitpid(server_pid, NULL, 0);
  server_pid = -1;
}

static char captured[128]; /* our stderr while a test reads the warnings */

static void cleanup(void) {
  server_kill();
  if (server_log[0]) unlink(server_log);
  if (captured[0]) unlink(captured);
  rmdir(tmpdir);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "watchdog: test hung, killing it\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  if (server_pid > 0) kill(server_pid, SIGKILL);
  if (server_log[0]) unlink(server_log); /* both async-signal-safe */
  if (captured[0]) unlink(captured);
  rmdir(tmpdir);
  _exit(3);
}

/* ---- bare runtimes ------------------------------------------------------ */

/* Just what the events front and the backend use: a loop, the flusher,
 * max_frame, the events ops. */
static dyn_runtime_t *rt_new(void) {
  dyn_runtime_t *rt = calloc(1, sizeof *rt);
  if (!rt || uv_loop_init(&rt->own_loop)) exit(2);
  rt->loop = &rt->own_loop;
  rt->owns_loop = 1;
  rt->max_frame = DYN_DEFAULT_MAX_FRAME;
  dyn__flusher_init(&rt->flusher, rt->loop);
  return rt;
}

/* Closes the backend and the loop; returns uv_loop_close's answer, which is
 * UV_EBUSY if a handle of the backend were still open. */
static int rt_free(dyn_runtime_t *rt) {
  if (rt->ev) rt->ev->close(rt->ev_state);
  rt->ev = NULL;
  dyn__flusher_close(&rt->flusher);
  for (int i = 0; i < 100 && uv_loop_alive(rt->loop); i++) uv_run(rt->loop, UV_RUN_NOWAIT);
  int rc = uv_loop_close(rt->loop);
  dyn__names_free(rt);
  free(rt);
  return rc;
}

static dyn_runtime_t *rt_open(void) {
  dyn_runtime_t *rt = rt_new();
  void *st = NULL;
  int rc = dyn__nats_open(rt, url, &st);
  if (rc) {
    fprintf(stderr, "dyn__nats_open(%s): %s\n", url, dyn_strerror(rc));
    rt_free(rt);
    return NULL;
  }
  rt->ev = &dyn__nats_events;
  rt->ev_state = st;
  return rt;
}

static void pump(dyn_runtime_t **rts, int n) {
  struct pollfd pf[8];
  for (int i = 0; i < n; i++) pf[i] = (struct pollfd){uv_backend_fd(rts[i]->loop), POLLIN, 0};
  poll(pf, (nfds_t)n, 1);
  for (int i = 0; i < n; i++) dyn_runtime_poll(rts[i]);
}

/* Drives the runtimes given after ms until cond holds (1) or ms passed (0). */
#define PUMP_UNTIL(cond, ms, ...)                                         \
  ({                                                                      \
    dyn_runtime_t *rts_[] = {__VA_ARGS__};                                \
    double end_ = now_ms() + (ms);                                        \
    int ok_ = 0;                                                          \
    for (;;) {                                                            \
      if (cond) {                                                         \
        ok_ = 1;                                                          \
        break;                                                            \
      }                                                                   \
      if (now_ms() >= end_) break;                                        \
      pump(rts_, (int)(sizeof rts_ / sizeof *rts_));                      \
    }                                                                     \
    ok_;                                                                  \
  })

static void pump_for(int ms, dyn_runtime_t **rts, int n) {
  double end = now_ms() + ms;
  while (now_ms() < end) pump(rts, n);
}

/* ---- subscribers -------------------------------------------------------- */

typedef struct sub {
  const char *pattern;
  int n;
  char subject[256];
  unsigned char *data; /* a copy of the last event's payload */
  size_t len;
  double at_ms;        /* when the last event arrived */
  int unsub_on_first;
  dyn_subscription_t *h;
} sub_t;

static void on_event(const char *subject, const void *data, size_t len, void *ud) {
  sub_t *s = ud;
  s->n++;
  s->at_ms = now_ms();
  snprintf(s->subject, sizeof s->subject, "%s", subject);
  free(s->data);
  s->data = malloc(len ? len : 1);
  if (s->data) memcpy(s->data, data, len);
  s->len = len;
  if (s->unsub_on_first && s->h) {
    dyn_unsubscribe(s->h);
    s->h = NULL;
  }
}

static void sub_free(sub_t *s) {
  free(s->data);
  s->data = NULL;
}

static dyn_runtime_t *A, *B;

/* B's subscriptions are live at the server once B's own probe, published
 * after them on the same connection, came back (NATS keeps one
 * connection's order). probe must match a subscription in probe_sub. */
static int sync_subs(dyn_runtime_t *r, sub_t *probe_sub, const char *probe) {
  int before = probe_sub->n;
  if (dyn_publish(r, probe, "", 0) != DYN_OK) return 0;
  return PUMP_UNTIL(probe_sub->n > before, 3000, A, B);
}

/* ---- tests -------------------------------------------------------------- */

static void test_wildcards(void) {
  sub_t s_star = {.pattern = "ev.a.*"}, s_gt = {.pattern = "ev.>"}, s_exact = {.pattern = "ev.a.b"},
        s_first = {.pattern = "*.x"}, s_all = {.pattern = ">"}, s_mid = {.pattern = "ev.*.c.>"};
  sub_t *subs[] = {&s_star, &s_gt, &s_exact, &s_first, &s_all, &s_mid};
  for (size_t i = 0; i < 6; i++)
    CHECK_STATUS(dyn_subscribe(B, subs[i]->pattern, on_event, subs[i], &subs[i]->h), DYN_OK);
  CHECK(sync_subs(B, &s_gt, "ev.sync"));
  for (size_t i = 0; i < 6; i++) subs[i]->n = 0;

  struct {
    const char *subject;
    int want[6]; /* star, gt, exact, first, all, mid */
  } cases[] = {
      {"ev.a.b", {1, 1, 1, 0, 1, 0}},   {"ev.a.c", {1, 1, 0, 0, 1, 0}},
      {"ev.a.b.c", {0, 1, 0, 0, 1, 0}}, {"ev", {0, 0, 0, 0, 1, 0}},
      {"ev.x", {0, 1, 0, 1, 1, 0}},     {"q.x", {0, 0, 0, 1, 1, 0}},
      {"ev.z.c.d", {0, 1, 0, 0, 1, 1}}, {"ev.z.c", {0, 1, 0, 0, 1, 0}},
  };
  int want[6] = {0};
  size_t ncases = sizeof cases / sizeof *cases;
  for (size_t k = 0; k < ncases; k++) {
    CHECK_STATUS(dyn_publish(A, cases[k].subject, cases[k].subject, strlen(cases[k].subject)),
                 DYN_OK);
    for (int i = 0; i < 6; i++) want[i] += cases[k].want[i];
  }
  /* ">" sees every case, and the last one last. */
  CHECK(PUMP_UNTIL(s_all.n == (int)ncases, 3000, A, B));
  PUMP_UNTIL(0, 50, A, B); /* room for wrong extra deliveries */
  for (int i = 0; i < 6; i++)
    CHECK_MSG(subs[i]->n == want[i], "%s got %d, want %d", subs[i]->pattern, subs[i]->n, want[i]);
  CHECK(!strcmp(s_all.subject, "ev.z.c"));
  CHECK(s_all.len == 6 && !memcmp(s_all.data, "ev.z.c", 6));

  /* Payload bytes exactly: NULs, empty, 256 KiB. */
  static unsigned char big[256 * 1024];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 7 + (i >> 9));
  const unsigned char nul[] = {0, 'a', 0, 0xff, 0};
  CHECK_STATUS(dyn_publish(A, "ev.a.b", nul, sizeof nul), DYN_OK);
  CHECK(PUMP_UNTIL(s_exact.n == 2, 3000, A, B));
  CHECK(s_exact.len == sizeof nul && !memcmp(s_exact.data, nul, sizeof nul));
  CHECK_STATUS(dyn_publish(A, "ev.a.b", NULL, 0), DYN_OK);
  CHECK(PUMP_UNTIL(s_exact.n == 3, 3000, A, B));
  CHECK(s_exact.len == 0);
  CHECK_STATUS(dyn_publish(A, "ev.a.b", big, sizeof big), DYN_OK);
  CHECK(PUMP_UNTIL(s_exact.n == 4, 3000, A, B));
  CHECK(s_exact.len == sizeof big && s_exact.data && !memcmp(s_exact.data, big, sizeof big));

  /* Over the server's max_payload (1 MiB): refused, not counted as dropped. */
  size_t huge_len = 2u << 20;
  unsigned char *huge = calloc(1, huge_len);
  uint64_t dropped = dyn__nats_dropped(A->ev_state);
  CHECK_STATUS(dyn_publish(A, "ev.a.b", huge, huge_len), DYN_ETOOBIG);
  CHECK(dyn__nats_dropped(A->ev_state) == dropped);
  free(huge);

  for (size_t i = 0; i < 6; i++) {
    dyn_unsubscribe(subs[i]->h);
    sub_free(subs[i]);
  }
}

static void test_component_subjects(void) {
  dyn_namespace_t *nsa, *nsb;
  dyn_component_t *ca, *cb;
  CHECK_STATUS(dyn_runtime_namespace(A, "dynamo", &nsa), DYN_OK);
  CHECK_STATUS(dyn_namespace_component(nsa, "router", &ca), DYN_OK);
  CHECK_STATUS(dyn_runtime_namespace(B, "dynamo", &nsb), DYN_OK);
  CHECK_STATUS(dyn_namespace_component(nsb, "router", &cb), DYN_OK);
  char subject[128];
  CHECK_STATUS(dyn_component_subject(ca, "kv_events", subject, sizeof subject), DYN_OK);
  CHECK(!strcmp(subject, "namespace.dynamo.component.router.kv_events"));

  sub_t exact = {.pattern = "(component)"}, any_comp = {.pattern = "namespace.dynamo.component.*.kv_events"},
        all_ns = {.pattern = "namespace.dynamo.>"};
  CHECK_STATUS(dyn_component_subscribe(cb, "kv_events", on_event, &exact, &exact.h), DYN_OK);
  CHECK_STATUS(dyn_subscribe(B, any_comp.pattern, on_event, &any_comp, &any_comp.h), DYN_OK);
  CHECK_STATUS(dyn_subscribe(B, all_ns.pattern, on_event, &all_ns, &all_ns.h), DYN_OK);
  CHECK(sync_subs(B, &all_ns, "namespace.dynamo.sync"));
  all_ns.n = 0;

  CHECK_STATUS(dyn_component_publish(ca, "kv_events", "blk", 3), DYN_OK);
  CHECK_STATUS(dyn_component_publish(ca, "metrics", "m", 1), DYN_OK);
  CHECK(PUMP_UNTIL(all_ns.n == 2, 3000, A, B));
  PUMP_UNTIL(0, 50, A, B);
  CHECK(exact.n == 1 && !strcmp(exact.subject, "namespace.dynamo.component.router.kv_events"));
  CHECK(exact.len == 3 && !memcmp(exact.data, "blk", 3));
  CHECK(any_comp.n == 1);
  CHECK(all_ns.n == 2 && !strcmp(all_ns.subject, "namespace.dynamo.component.router.metrics"));
  dyn_unsubscribe(exact.h);
  dyn_unsubscribe(any_comp.h);
  dyn_unsubscribe(all_ns.h);
  sub_free(&exact);
  sub_free(&any_comp);
  sub_free(&all_ns);
}

static void test_unsubscribe(void) {
  sub_t gone = {.pattern = "u.>"}, stays = {.pattern = "u.>"}, self = {.pattern = "u.self", .unsub_on_first = 1};
  CHECK_STATUS(dyn_subscribe(B, gone.pattern, on_event, &gone, &gone.h), DYN_OK);
  CHECK_STATUS(dyn_subscribe(B, stays.pattern, on_event, &stays, &stays.h), DYN_OK);
  CHECK_STATUS(dyn_subscribe(B, self.pattern, on_event, &self, &self.h), DYN_OK);
  CHECK(sync_subs(B, &stays, "u.sync"));
  CHECK(gone.n == 1);

  dyn_unsubscribe(gone.h);
  gone.h = NULL;
  int before = stays.n;
  CHECK_STATUS(dyn_publish(A, "u.1", "x", 1), DYN_OK);
  CHECK(PUMP_UNTIL(stays.n == before + 1, 3000, A, B));
  PUMP_UNTIL(0, 50, A, B);
  CHECK_MSG(gone.n == 1, "an unsubscribed callback ran %d more time(s)", gone.n - 1);

  /* A callback that unsubscribes itself sees the first of a burst only,
   * even when the burst arrives in one read. */
  before = stays.n;
  for (int i = 0; i < 5; i++) CHECK_STATUS(dyn_publish(A, "u.self", "s", 1), DYN_OK);
  CHECK(PUMP_UNTIL(stays.n == before + 5, 3000, A, B));
  PUMP_UNTIL(0, 50, A, B);
  CHECK_MSG(self.n == 1, "self-unsubscribing callback ran %d times", self.n);
  CHECK(self.h == NULL);

  dyn_unsubscribe(stays.h);
  sub_free(&gone);
  sub_free(&stays);
  sub_free(&self);
}

/* A subscriber whose runtime lives on, and is driven by, a thread of its
 * own: every callback must run there, never on a libnats thread. */
typedef struct thread_sub {
  pthread_t self;
  atomic_int ready, stop, n, elsewhere;
  int close_rc;
} thread_sub_t;

static void on_thread_event(const char *subject, const void *data, size_t len, void *ud) {
  (void)subject;
  (void)data;
  (void)len;
  thread_sub_t *t = ud;
  if (!pthread_equal(pthread_self(), t->self)) atomic_fetch_add(&t->elsewhere, 1);
  atomic_fetch_add(&t->n, 1);
}

static void *thread_main(void *arg) {
  thread_sub_t *t = arg;
  t->self = pthread_self();
  dyn_runtime_t *rt = rt_open();
  if (!rt) {
    atomic_store(&t->ready, -1);
    return NULL;
  }
  /* No handle kept: the backend keeps the subscription until it closes. */
  if (dyn_subscribe(rt, "th.>", on_thread_event, t, NULL) != DYN_OK ||
      dyn_publish(rt, "th.sync", "", 0) != DYN_OK ||
      !PUMP_UNTIL(atomic_load(&t->n) > 0, 3000, rt)) {
    atomic_store(&t->ready, -1);
  } else {
    atomic_store(&t->ready, 1);
    while (!atomic_load(&t->stop)) pump(&rt, 1);
  }
  t->close_rc = rt_free(rt);
  return NULL;
}

static void test_loop_thread(void) {
  thread_sub_t t;
  memset(&t, 0, sizeof t);
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, thread_main, &t) == 0);
  double end = now_ms() + 5000;
  while (atomic_load(&t.ready) == 0 && now_ms() < end) sleep_ms(1);
  CHECK(atomic_load(&t.ready) == 1);
  if (atomic_load(&t.ready) == 1) {
    int base = atomic_load(&t.n);
    for (int i = 0; i < 200; i++) CHECK_STATUS(dyn_publish(A, "th.x", "t", 1), DYN_OK);
    CHECK(PUMP_UNTIL(atomic_load(&t.n) == base + 200, 5000, A));
  }
  atomic_store(&t.stop, 1);
  pthread_join(th, NULL);
  CHECK_MSG(atomic_load(&t.elsewhere) == 0, "%d callback(s) ran off the loop's thread",
            atomic_load(&t.elsewhere));
  CHECK_STATUS(t.close_rc, 0);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Publishes N events one at a time on A to subject and times each until
 * the sink (s) has seen one more; returns how many came back, sorted us[]. */
enum { LAT_N = 1000 };
static int time_events(const char *subject, const char *payload, sub_t *sink, double *us) {
  int got = 0;
  for (int i = 0; i < LAT_N; i++) {
    int before = sink->n;
    double t0 = now_ms();
    if (dyn_publish(A, subject, payload, strlen(payload)) != DYN_OK) break;
    if (!PUMP_UNTIL(sink->n > before, 1000, A, B)) break;
    us[got++] = (sink->at_ms - t0) * 1000.0;
  }
  qsort(us, (size_t)got, sizeof *us, cmp_double);
  return got;
}

static void test_latency(void) {
  sub_t s = {.pattern = "lat.x"};
  CHECK_STATUS(dyn_subscribe(B, s.pattern, on_event, &s, &s.h), DYN_OK);
  CHECK(sync_subs(B, &s, "lat.x"));
  static double us[LAT_N];
  int got = time_events("lat.x", "0123456789abcdef", &s, us);
  CHECK_MSG(got == LAT_N, "only %d of %d events came back", got, LAT_N);
  if (got > 0) {
    double p50 = us[got / 2], p99 = us[got * 99 / 100];
    printf("latency publish->deliver over %d events: p50 %.1f us, p99 %.1f us, min %.1f us\n",
           got, p50, p99, us[0]);
    /* A sanity bound only; the number above is the measurement. */
    CHECK_MSG(p50 < 5000.0, "p50 %.1f us", p50);
  }
  dyn_unsubscribe(s.h);
  sub_free(&s);
}

/* Publishing from inside a callback (so inside the loop): the reply leaves
 * in the same loop pass, from the backend's prepare/check handles. */
static void on_echo(const char *subject, const void *data, size_t len, void *ud) {
  (void)subject;
  (void)ud;
  if (dyn_publish(B, "echo.rep", data, len) != DYN_OK) failed++;
}

static void test_echo(void) {
  sub_t rep = {.pattern = "echo.rep"};
  dyn_subscription_t *req = NULL;
  CHECK_STATUS(dyn_subscribe(B, "echo.req", on_echo, NULL, &req), DYN_OK);
  CHECK_STATUS(dyn_subscribe(A, rep.pattern, on_event, &rep, &rep.h), DYN_OK);
  /* B's echo is live once B's own request came back to A. */
  CHECK(PUMP_UNTIL((dyn_publish(B, "echo.req", "s", 1), rep.n > 0), 3000, A, B));
  PUMP_UNTIL(0, 20, A, B);
  static double us[LAT_N];
  int got = time_events("echo.req", "ping", &rep, us);
  CHECK_MSG(got == LAT_N, "only %d of %d replies came back", got, LAT_N);
  if (got > 0) {
    printf("round trip A->B->A (reply published in B's callback) over %d: p50 %.1f us, "
           "p99 %.1f us\n",
           got, us[got / 2], us[got * 99 / 100]);
  }
  CHECK(rep.len == 4 && !memcmp(rep.data, "ping", 4));
  dyn_unsubscribe(req);
  dyn_unsubscribe(rep.h);
  sub_free(&rep);
}

/* More than the sockets hold at once, published outside the loop: the
 * writes that cannot finish wait for writability and nothing is lost. */
static void test_burst(void) {
  sub_t s = {.pattern = "burst.x"};
  CHECK_STATUS(dyn_subscribe(B, s.pattern, on_event, &s, &s.h), DYN_OK);
  CHECK(sync_subs(B, &s, "burst.x"));
  s.n = 0;
  enum { N = 300, LEN = 64 * 1024 };
  static unsigned char buf[LEN];
  int ok = 0;
  for (int i = 0; i < N; i++) {
    memset(buf, i & 0xff, sizeof buf);
    ok += dyn_publish(A, "burst.x", buf, sizeof buf) == DYN_OK;
  }
  CHECK(ok == N);
  CHECK_MSG(PUMP_UNTIL(s.n == N, 10000, A, B), "%d of %d arrived", s.n, N);
  CHECK(s.len == LEN && s.data && s.data[0] == ((N - 1) & 0xff) && s.data[LEN - 1] == ((N - 1) & 0xff));
  CHECK(dyn__nats_dropped(A->ev_state) == 0);
  dyn_unsubscribe(s.h);
  sub_free(&s);
}

/* Events published right before the backend closes still leave, even when
 * the socket cannot take them all at once. */
static void test_close_flushes(void) {
  sub_t s = {.pattern = "last.>"};
  CHECK_STATUS(dyn_subscribe(B, s.pattern, on_event, &s, &s.h), DYN_OK);
  CHECK(sync_subs(B, &s, "last.sync"));
  s.n = 0;
  dyn_runtime_t *P = rt_open();
  REQUIRE(P);
  enum { N = 8, LEN = 900 * 1024 }; /* under the server's 1 MiB max_payload */
  unsigned char *buf = malloc(LEN);
  REQUIRE(buf);
  int ok = 0;
  for (int i = 0; i < N; i++) {
    memset(buf, 'a' + i, LEN);
    ok += dyn_publish(P, "last.words", buf, LEN) == DYN_OK;
  }
  free(buf);
  CHECK(ok == N);
  CHECK_STATUS(rt_free(P), 0);
  CHECK_MSG(PUMP_UNTIL(s.n == N, 5000, A, B), "%d of %d published before close arrived", s.n, N);
  CHECK(s.len == LEN && s.data && s.data[LEN - 1] == 'a' + N - 1);
  dyn_unsubscribe(s.h);
  sub_free(&s);
}

static int count_fds(void) {
  int n = 0;
  char path[64];
  for (int fd = 0; fd < 1024; fd++) {
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    n += access(path, F_OK) == 0;
  }
  return n;
}

/* ---- the outage --------------------------------------------------------- */

static int saved_stderr = -1;

static void capture_stderr(void) {
  snprintf(captured, sizeof captured, "%s/stderr.log", tmpdir);
  fflush(stderr);
  saved_stderr = dup(2);
  int fd = open(captured, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) {
    dup2(fd, 2);
    close(fd);
  }
}

static void restore_stderr(void) {
  if (saved_stderr < 0) return;
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  saved_stderr = -1;
}

/* Occurrences of needle in what was captured so far. */
static int captured_count(const char *needle) {
  FILE *f = fopen(captured, "r");
  if (!f) return -1;
  int n = 0;
  char line[2048];
  while (fgets(line, sizeof line, f))
    if (strstr(line, needle)) n++;
  fclose(f);
  return n;
}

static void dump_captured(void) {
  FILE *f = fopen(captured, "r");
  if (!f) return;
  char line[2048];
  while (fgets(line, sizeof line, f)) fprintf(stderr, "  | %s", line);
  fclose(f);
  unlink(captured);
}

static void test_outage(void) {
  dyn_runtime_t *C = rt_open(); /* closed while NATS is away */
  REQUIRE(C);
  sub_t s = {.pattern = "o.>"}, late = {.pattern = "late.>"};
  CHECK_STATUS(dyn_subscribe(B, s.pattern, on_event, &s, &s.h), DYN_OK);
  CHECK(sync_subs(B, &s, "o.sync"));
  s.n = 0;
  dyn_runtime_t *all[] = {A, B, C};

  capture_stderr();
  server_kill();
  /* Publishes made before A noticed went into a dead socket (at most once);
   * from then on they are refused at once. */
  int rc = DYN_OK;
  CHECK(PUMP_UNTIL((rc = dyn_publish(A, "o.1", "x", 1)) == DYN_ECONTROL, 3000, A, B, C));
  /* Each connection announces its outage once. */
  CHECK(PUMP_UNTIL(captured_count("lost NATS at") >= 3, 3000, A, B, C));

  uint64_t d0 = dyn__nats_dropped(A->ev_state);
  double t0 = now_ms();
  int refused = 0;
  for (int i = 0; i < 1000; i++) refused += dyn_publish(A, "o.2", "y", 1) == DYN_ECONTROL;
  double took = now_ms() - t0;
  CHECK_MSG(refused == 1000, "%d of 1000 refused", refused);
  CHECK_MSG(dyn__nats_dropped(A->ev_state) - d0 == 1000, "dropped went %llu -> %llu",
            (unsigned long long)d0, (unsigned long long)dyn__nats_dropped(A->ev_state));
  CHECK_MSG(took < 500.0, "1000 dropped publishes took %.1f ms", took);
  /* Subscribing while away works: libnats sends it once connected. */
  CHECK_STATUS(dyn_subscribe(B, late.pattern, on_event, &late, &late.h), DYN_OK);
  /* Several reconnect attempts (every 250 ms), still one warning each. */
  pump_for(700, all, 3);
  for (int i = 0; i < 100; i++) dyn_publish(A, "o.3", "z", 1);
  int lost = captured_count("lost NATS at");
  CHECK_MSG(lost == 3, "%d outage warnings for 3 connections", lost);
  CHECK(captured_count(url) >= 3);

  /* Closing while NATS is away neither hangs nor leaks. */
  t0 = now_ms();
  CHECK_STATUS(rt_free(C), 0);
  took = now_ms() - t0;
  CHECK_MSG(took < 3000.0, "close during the outage took %.1f ms", took);

  REQUIRE(server_start() == 0);
  /* Events flow again on the old subscription, and on the one made while
   * NATS was away, within a few reconnect periods. */
  int ok = PUMP_UNTIL((dyn_publish(A, "o.back", "b", 1), s.n > 0), 10000, A, B);
  CHECK_MSG(ok, "no event came through within 10 s of the restart");
  if (ok) {
    CHECK(!strcmp(s.subject, "o.back"));
    CHECK(PUMP_UNTIL((dyn_publish(A, "late.x", "l", 1), late.n > 0), 3000, A, B));
    uint64_t d1 = dyn__nats_dropped(A->ev_state);
    int before = s.n;
    for (int i = 0; i < 10; i++) CHECK_STATUS(dyn_publish(A, "o.after", "a", 1), DYN_OK);
    CHECK(PUMP_UNTIL(s.n == before + 10, 3000, A, B));
    CHECK(dyn__nats_dropped(A->ev_state) == d1);
  }
  CHECK(PUMP_UNTIL(captured_count("is back;") >= 2, 3000, A, B));
  int back = captured_count("is back;");
  CHECK_MSG(back == 2, "%d recovery lines for 2 connections", back);
  CHECK(captured_count("lost NATS at") == 3);
  restore_stderr();
  if (failed) dump_captured();
  else unlink(captured);

  dyn_unsubscribe(s.h);
  dyn_unsubscribe(late.h);
  sub_free(&s);
  sub_free(&late);
}

/* A server that stops answering without closing anything (SIGSTOP: a
 * cut network looks the same): libnats notices on its timer thread, after
 * unanswered PINGs, and its reconnect thread then holds the connection's
 * lock through each connect attempt (the kernel accepts, the server never
 * says INFO: 2 s each). Publishing and subscribing must not wait for it. */
static void test_stalled_server(void) {
  int64_t ping = dyn__nats_ping_interval_ms;
  int pings = dyn__nats_max_pings_out;
  dyn__nats_ping_interval_ms = 200;
  dyn__nats_max_pings_out = 2;
  dyn_runtime_t *P = rt_open(), *S = rt_open();
  dyn__nats_ping_interval_ms = ping;
  dyn__nats_max_pings_out = pings;
  REQUIRE(P && S);
  sub_t s = {.pattern = "st.>"}, late = {.pattern = "st2.>"};
  CHECK_STATUS(dyn_subscribe(S, s.pattern, on_event, &s, &s.h), DYN_OK);
  CHECK(PUMP_UNTIL((dyn_publish(S, "st.sync", "", 0), s.n > 0), 3000, P, S));

  capture_stderr();
  REQUIRE(kill(server_pid, SIGSTOP) == 0);
  CHECK_MSG(PUMP_UNTIL(captured_count("lost NATS at") >= 2, 5000, P, S),
            "%d of 2 connections noticed the stalled server", captured_count("lost NATS at"));
  /* Reconnect attempts are under way now; none of this may wait for one. */
  double worst = 0;
  double end = now_ms() + 2500;
  int refused = 0, tries = 0;
  while (now_ms() < end) {
    double t0 = now_ms();
    refused += dyn_publish(P, "st.x", "x", 1) == DYN_ECONTROL;
    tries++;
    double t = now_ms() - t0;
    if (t > worst) worst = t;
    dyn_runtime_t *both[] = {P, S};
    pump(both, 2);
  }
  double t0 = now_ms();
  CHECK_STATUS(dyn_subscribe(S, late.pattern, on_event, &late, &late.h), DYN_OK);
  dyn_unsubscribe(late.h); /* made and unmade while away... */
  CHECK_STATUS(dyn_subscribe(S, late.pattern, on_event, &late, &late.h), DYN_OK); /* ...and again */
  double sub_ms = now_ms() - t0;
  CHECK_MSG(refused == tries, "%d of %d publishes refused", refused, tries);
  CHECK_MSG(worst < 50.0, "a publish waited %.1f ms while NATS was stalled", worst);
  CHECK_MSG(sub_ms < 50.0, "subscribing waited %.1f ms while NATS was stalled", sub_ms);

  REQUIRE(kill(server_pid, SIGCONT) == 0);
  s.n = 0;
  CHECK_MSG(PUMP_UNTIL((dyn_publish(P, "st.back", "b", 1), s.n > 0), 10000, P, S),
            "no event within 10 s of the server resuming");
  CHECK(PUMP_UNTIL((dyn_publish(P, "st2.x", "l", 1), late.n > 0), 3000, P, S));
  CHECK(PUMP_UNTIL(captured_count("is back;") >= 2, 3000, P, S));
  restore_stderr();
  if (failed) dump_captured();
  else unlink(captured);
  dyn_unsubscribe(s.h);
  dyn_unsubscribe(late.h);
  sub_free(&s);
  sub_free(&late);
  CHECK_STATUS(rt_free(P), 0);
  CHECK_STATUS(rt_free(S), 0);
  /* A and B were not driven meanwhile; they must still work. */
  sub_t after = {.pattern = "after.x"};
  CHECK_STATUS(dyn_subscribe(B, after.pattern, on_event, &after, &after.h), DYN_OK);
  CHECK(PUMP_UNTIL((dyn_publish(A, "after.x", "a", 1), after.n > 0), 5000, A, B));
  dyn_unsubscribe(after.h);
  sub_free(&after);
}

static void test_open_fails(void) {
  int dead = free_port();
  char bad[64];
  snprintf(bad, sizeof bad, "nats://127.0.0.1:%d", dead);
  capture_stderr();
  dyn_runtime_t *rt = rt_new();
  void *st = NULL;
  double t0 = now_ms();
  int rc = dyn__nats_open(rt, bad, &st);
  double took = now_ms() - t0;
  restore_stderr();
  CHECK_STATUS(rc, DYN_ECONTROL);
  CHECK_MSG(took < 3000.0, "a refused open took %.1f ms", took);
  char want[128];
  snprintf(want, sizeof want, "cannot reach NATS at %s", bad);
  CHECK_MSG(captured_count(want) == 1, "no \"%s\" in the log", want);
  if (failed) dump_captured();
  else unlink(captured);
  CHECK_STATUS(dyn__nats_open(rt, "", &st), DYN_EINVAL);
  CHECK_STATUS(rt_free(rt), 0); /* nothing of the failed open is left */
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (!find_server()) {
    /* scripts/deps.sh installs it: a missing prerequisite fails. */
    printf("FAIL: nats-server not found (scripts/deps.sh installs nats-server)\n");
    return 1;
  }
  /* The outage test reads the warnings: make sure they are printed. */
  const char *lvl = getenv("DYN_LOG");
  if (!lvl || !strcmp(lvl, "error")) setenv("DYN_LOG", "warn", 1);
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 2;
  }
  snprintf(server_log, sizeof server_log, "%s/server.log", tmpdir);
  atexit(cleanup);
  signal(SIGALRM, on_alarm);
  alarm(50);

  /* libuv opens a pipe for signals with the first loop, for good. */
  uv_loop_t first;
  if (uv_loop_init(&first) == 0) uv_loop_close(&first);
  int fds = count_fds();
  port = free_port();
  REQUIRE(port > 0);
  snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
  REQUIRE(server_start() == 0);
  A = rt_open();
  B = rt_open();
  REQUIRE(A && B);

  test_wildcards();
  test_component_subjects();
  test_unsubscribe();
  test_loop_thread();
  test_latency();
  test_echo();
  test_burst();
  test_close_flushes();
  test_outage();
  test_stalled_server();
  test_open_fails();

  CHECK_STATUS(rt_free(A), 0);
  CHECK_STATUS(rt_free(B), 0);
  /* Every socket and every dup of one the backend polled is closed. */
  CHECK_MSG(count_fds() == fds, "%d descriptors open at the start, %d at the end", fds,
            count_fds());
  return summary();
}
