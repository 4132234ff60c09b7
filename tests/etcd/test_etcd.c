/* test_etcd.c - the etcd discovery backend against a real etcd.
 *
 * Starts Debian's etcd on free ports in the test's temporary directory and
 * drives several backend sessions on one loop (plus one child process) to
 * check the discovery contract end to end: snapshot + SYNCED + changes, a
 * closed session's keys vanishing at once, a killed process's keys
 * vanishing within the TTL, a lease lost under a live process being
 * granted again with its keys, a session id change reaching the hook, an
 * etcd restart giving RESET + a fresh snapshot + SYNCED, and 64-bit lease
 * ids surviving exactly. Fails where etcd is not installed.
 *
 * It also prints the put-to-watch latency between two sessions.
 */
#define _GNU_SOURCE
/* harness.h's helpers for control-plane tests name these; unused here. */
#define DYN_BIN "/bin/false"
#define ECHO_WORKER "/bin/false"
#define H_WATCHDOG_S 110
#include "../harness.h"

#include <curl/curl.h>
#include <uv.h>

#include "runtime/etcd/etcd.h"
#include "runtime/etcd/etcd_codec.h"
#include "runtime/internal.h"

#define TTL_S 2
#define PFX "instances/test/comp/gen:"

static uv_loop_t loop;
static char etcd_bin[512];
static char etcd_url[64], peer_url[64];
static char etcd_dir[128], etcd_log[160];
static pid_t etcd_pid = -1;

/* ---- the loop ---------------------------------------------------------- */

/* The backend needs only a runtime's loop; a full runtime would also want
 * the embedded control plane, which this test has no use for. */
static dyn_runtime_t *mini_runtime(uv_loop_t *l) {
  dyn_runtime_t *rt = calloc(1, sizeof *rt);
  if (rt) rt->loop = l;
  return rt;
}

static void pump(void) {
  uv_run(&loop, UV_RUN_NOWAIT);
  int t = uv_backend_timeout(&loop);
  struct pollfd pf = {uv_backend_fd(&loop), POLLIN, 0};
  poll(&pf, 1, t < 0 || t > 5 ? 5 : t);
}

#define WAIT_FOR(cond, ms)                                         \
  ({                                                               \
    uint64_t end_ = h_now_ms() + (uint64_t)(ms);                   \
    while (!(cond) && h_now_ms() < end_) pump();                   \
    (cond) ? 1 : 0;                                                \
  })

static void settle(int ms) { (void)WAIT_FOR(0, ms); }

/* ---- watch events, recorded -------------------------------------------- */

#define REC_MAX 1024
typedef struct rec_ev {
  int ev;
  char key[128];
  char value[256];
  size_t len;
  double t;
} rec_ev_t;

typedef struct rec {
  int n;
  rec_ev_t e[REC_MAX];
} rec_t;

static void on_rec(dyn_watch_event_t ev, const char *key, const char *value, size_t len,
                   void *ud) {
  rec_t *r = ud;
  if (r->n == REC_MAX) return;
  rec_ev_t *x = &r->e[r->n++];
  x->ev = ev;
  x->t = h_now_ms_f();
  snprintf(x->key, sizeof x->key, "%s", key ? key : "");
  snprintf(x->value, sizeof x->value, "%s", value ? value : "");
  x->len = len;
}

/* Index of the first event ev (for key, if not NULL) at or after from. */
static int rec_find(const rec_t *r, int ev, const char *key, int from) {
  for (int i = from < 0 ? 0 : from; i < r->n; i++)
    if (r->e[i].ev == ev && (!key || !strcmp(r->e[i].key, key))) return i;
  return -1;
}

/* Index of the first PUT of key=value at or after from. */
static int rec_find_value(const rec_t *r, const char *key, const char *value, int from) {
  for (int i = rec_find(r, DYN_WATCH_PUT, key, from); i >= 0; i = rec_find(r, DYN_WATCH_PUT, key, i + 1))
    if (!strcmp(r->e[i].value, value)) return i;
  return -1;
}

/* ---- etcd, by hand ------------------------------------------------------ */

static size_t collect(char *data, size_t size, size_t n, void *ud) {
  char **buf = ud;
  size_t old = *buf ? strlen(*buf) : 0, add = size * n;
  char *b = realloc(*buf, old + add + 1);
  if (!b) return 0;
  memcpy(b + old, data, add);
  b[old + add] = 0;
  *buf = b;
  return add;
}

/* A blocking POST to etcd's gateway: the body (malloc'd) or NULL. */
static char *raw_post(const char *path, const char *body, long *status) {
  char url[256];
  snprintf(url, sizeof url, "%s%s", etcd_url, path);
  CURL *c = curl_easy_init();
  char *out = NULL;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
  CURLcode res = curl_easy_perform(c);
  if (status) {
    *status = 0;
    if (res == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
  }
  curl_easy_cleanup(c);
  if (res != CURLE_OK) {
    free(out);
    return NULL;
  }
  return out ? out : strdup("");
}

/* The "lease" string etcd holds for key, exactly as sent ("" if none). */
static void raw_key_lease(const char *key, char *out, size_t cap) {
  char k64[256], body[400];
  dyn__etcd_b64_encode(key, strlen(key), k64);
  snprintf(body, sizeof body, "{\"key\":\"%s\"}", k64);
  out[0] = 0;
  char *resp = raw_post("/v3/kv/range", body, NULL);
  json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
  json_t *kv = json_array_get(json_object_get(j, "kvs"), 0);
  const char *s = json_string_value(json_object_get(kv, "lease"));
  if (s) snprintf(out, cap, "%s", s);
  json_decref(j);
  free(resp);
}

static int raw_revoke(uint64_t id) {
  char body[64];
  long status = 0;
  snprintf(body, sizeof body, "{\"ID\":\"%" PRIu64 "\"}", id);
  free(raw_post("/v3/lease/revoke", body, &status));
  return status == 200 ? 0 : -1;
}

static int find_etcd(void) {
  const char *path = getenv("PATH");
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin");
  for (char *dir = strtok(buf, ":"); dir; dir = strtok(NULL, ":")) {
    snprintf(etcd_bin, sizeof etcd_bin, "%s/etcd", dir);
    if (access(etcd_bin, X_OK) == 0) return 0;
  }
  return -1;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) ||
      getsockname(fd, (struct sockaddr *)&sa, &len)) {
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

/* Starts etcd (on the same data dir and ports each time) and waits until
 * it answers, 15 s at most. */
static int etcd_start(void) {
  char *argv[] = {etcd_bin, "--name", "default", "--data-dir", etcd_dir,
                  "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                  "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                  "--initial-cluster", NULL, NULL};
  char cluster[96];
  snprintf(cluster, sizeof cluster, "default=%s", peer_url);
  argv[14] = cluster;
  int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  etcd_pid = h_spawn(argv, devnull, etcd_log);
  if (devnull >= 0) close(devnull);
  if (etcd_pid < 0) return -1;
  uint64_t end = h_now_ms() + 15000;
  while (h_now_ms() < end) {
    long status = 0;
    free(raw_post("/v3/kv/range", "{\"key\":\"AA==\"}", &status));
    if (status == 200) return 0;
    if (waitpid(etcd_pid, NULL, WNOHANG) == etcd_pid) break;
    h_sleep_ms(50);
  }
  fprintf(stderr, "etcd did not start; see %s\n", etcd_log);
  return -1;
}

static int etcd_stop(void) {
  kill(etcd_pid, SIGTERM);
  int rc = h_wait_exit(etcd_pid, 10000, NULL);
  if (rc) h_kill9(etcd_pid);
  return rc;
}

/* ---- a session in another process -------------------------------------- */

/* The child: opens a session, puts key, says "ready", serves forever. */
static int child_main(const char *url, const char *key) {
  snprintf(etcd_url, sizeof etcd_url, "%s", url);
  uv_loop_t l;
  uv_loop_init(&l);
  dyn_runtime_t *rt = mini_runtime(&l);
  void *st = NULL;
  if (dyn__etcd_open(rt, url, &st)) return 2;
  dyn__etcd_discovery.put(st, key, "{\"address\":\"127.0.0.1:1\"}");
  /* Ready once the key is in etcd, so the parent's watch must see it. */
  uint64_t end = h_now_ms() + 5000;
  char lease[32] = "";
  while (h_now_ms() < end) {
    uv_run(&l, UV_RUN_NOWAIT);
    raw_key_lease(key, lease, sizeof lease);
    if (lease[0]) break;
    h_sleep_ms(5);
  }
  printf("ready %" PRIx64 "\n", dyn__etcd_discovery.session_id(st));
  fflush(stdout);
  uv_run(&l, UV_RUN_DEFAULT);
  return 0;
}

static pid_t spawn_child(const char *key) {
  int p[2];
  if (pipe2(p, O_CLOEXEC)) return -1;
  char *argv[] = {"/proc/self/exe", "child", etcd_url, (char *)key, NULL};
  pid_t pid = h_spawn(argv, p[1], NULL);
  close(p[1]);
  char line[128];
  size_t n = 0;
  uint64_t end = h_now_ms() + 10000;
  while (pid > 0 && n < sizeof line - 1 && !memchr(line, '\n', n) && h_now_ms() < end) {
    struct pollfd pf = {p[0], POLLIN, 0};
    if (poll(&pf, 1, 100) <= 0) continue;
    ssize_t r = read(p[0], line + n, sizeof line - 1 - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(p[0]);
  line[n] = 0;
  if (n < 6 || memcmp(line, "ready ", 6)) {
    fprintf(stderr, "child did not get ready (\"%s\")\n", line);
    return -1;
  }
  return pid;
}

/* ---- tests -------------------------------------------------------------- */

static void test_codec(void) {
  char enc[64], dec[64];
  size_t n = 0;
  const char *cases[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    dyn__etcd_b64_encode(cases[i], strlen(cases[i]), enc);
    CHECK_EQ_STR(enc, want[i]);
    CHECK(dyn__etcd_b64_decode(enc, strlen(enc), dec, &n) == 0 && n == strlen(cases[i]) &&
          !memcmp(dec, cases[i], n));
  }
  CHECK(dyn__etcd_b64_decode("Zm9v!", 5, dec, &n) == -1);
  char end[8];
  dyn__etcd_prefix_end("ab", 2, end, &n);
  CHECK(n == 2 && end[0] == 'a' && end[1] == 'c');
  dyn__etcd_prefix_end("a\xff", 2, end, &n);
  CHECK(n == 1 && end[0] == 'b');
  dyn__etcd_prefix_end("\xff\xff", 2, end, &n);
  CHECK(n == 0);
  /* 2^53 + 1 has no double: only a string read keeps it. */
  json_t *j = json_loads("{\"ID\":\"9007199254740993\",\"big\":\"18446744073709551615\","
                         "\"neg\":\"-1\",\"n\":42}", 0, NULL);
  uint64_t v = 0;
  CHECK(dyn__etcd_json_u64(j, "ID", &v) == 0 && v == 9007199254740993ull);
  CHECK(dyn__etcd_json_u64(j, "big", &v) == -1); /* above int64 */
  CHECK(dyn__etcd_json_u64(j, "neg", &v) == -1);
  CHECK(dyn__etcd_json_u64(j, "n", &v) == 0 && v == 42);
  CHECK(dyn__etcd_json_u64(j, "none", &v) == 1 && v == 0);
  json_decref(j);
}

static void test_open_fails(dyn_runtime_t *rt) {
  void *st = NULL;
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", free_port());
  uint64_t t0 = h_now_ms();
  CHECK_STATUS(dyn__etcd_open(rt, url, &st), DYN_ECONTROL);
  CHECK_LE_INT(h_now_ms() - t0, 3000);
  CHECK_STATUS(dyn__etcd_open(rt, "", &st), DYN_EINVAL);
  CHECK_STATUS(dyn__etcd_open(rt, "127.0.0.1:2379", &st), DYN_EINVAL);
}

static int session_changes;
static uint64_t hook_old, hook_new;
static void *hook_state;

/* What the runtime's hook does: move the instance key to the new id. */
static void on_session(void *ud, uint64_t old_id, uint64_t new_id) {
  (void)ud;
  session_changes++;
  hook_old = old_id;
  hook_new = new_id;
  char key[128];
  snprintf(key, sizeof key, PFX "%" PRIx64, old_id);
  dyn__etcd_discovery.del(hook_state, key);
  snprintf(key, sizeof key, PFX "%" PRIx64, new_id);
  dyn__etcd_discovery.put(hook_state, key, "{\"address\":\"127.0.0.1:3\"}");
}

static int self_unwatched;
static void *self_handle, *self_state;
static void on_self_unwatch(dyn_watch_event_t ev, const char *key, const char *value,
                            size_t len, void *ud) {
  (void)key, (void)value, (void)len, (void)ud;
  self_unwatched++;
  if (ev == DYN_WATCH_SYNCED) dyn__etcd_discovery.unwatch(self_state, self_handle);
}

/* A watch callback that closes its own session, mid-snapshot. */
static int closer_calls;
static void *closer_state;
static void on_closer(dyn_watch_event_t ev, const char *key, const char *value, size_t len,
                      void *ud) {
  (void)key, (void)value, (void)len, (void)ud;
  closer_calls++;
  if (ev == DYN_WATCH_PUT && closer_state) {
    dyn__etcd_discovery.close(closer_state);
    closer_state = NULL;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void run_tests(dyn_runtime_t *rt) {
  const dyn__discovery_ops_t *ops = &dyn__etcd_discovery;
  static rec_t w;
  void *a = NULL, *b = NULL, *big = NULL, *fresh = NULL, *wh = NULL;

  /* ---- put, snapshot, SYNCED, PUT, DELETE ---- */
  REQUIRE(dyn__etcd_open(rt, etcd_url, &a) == DYN_OK);
  uint64_t a_id = ops->session_id(a);
  CHECK(a_id != 0);
  char key_a[128], lease_str[32], want[32];
  snprintf(key_a, sizeof key_a, PFX "%" PRIx64, a_id);
  CHECK_STATUS(ops->put(a, key_a, "{\"address\":\"127.0.0.1:1\"}"), DYN_OK);
  CHECK(WAIT_FOR((raw_key_lease(key_a, lease_str, sizeof lease_str), lease_str[0]), 3000));
  snprintf(want, sizeof want, "%" PRIu64, a_id);
  CHECK_EQ_STR(lease_str, want); /* etcd's own id, exactly */
  printf("etcd-chosen lease id %s (%s 2^53)\n", lease_str,
         a_id > (1ull << 53) ? "above" : "below");

  REQUIRE(ops->watch(a, PFX, on_rec, &w, &wh) == DYN_OK);
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_SYNCED, NULL, 0) >= 0, 3000));
  int synced = rec_find(&w, DYN_WATCH_SYNCED, NULL, 0);
  int put_a = rec_find(&w, DYN_WATCH_PUT, key_a, 0);
  CHECK(put_a >= 0 && put_a < synced);
  if (put_a >= 0) {
    CHECK_EQ_STR(w.e[put_a].value, "{\"address\":\"127.0.0.1:1\"}");
    CHECK_EQ_INT(w.e[put_a].len, strlen("{\"address\":\"127.0.0.1:1\"}"));
  }
  CHECK_EQ_INT(rec_find(&w, DYN_WATCH_RESET, NULL, 0), -1);

  ops->put(a, PFX "b", "vb");
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, PFX "b", synced) >= 0, 3000));
  ops->del(a, PFX "b");
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_DELETE, PFX "b", synced) >= 0, 3000));
  /* In order, even when issued back to back. */
  int from = w.n;
  ops->put(a, PFX "c", "1");
  ops->del(a, PFX "c");
  ops->put(a, PFX "c", "2");
  CHECK(WAIT_FOR(rec_find_value(&w, PFX "c", "2", from) >= 0, 3000));
  settle(50);
  int last = -1;
  for (int i = from; i < w.n; i++)
    if (!strcmp(w.e[i].key, PFX "c")) last = i;
  CHECK(last >= 0 && w.e[last].ev == DYN_WATCH_PUT && !strcmp(w.e[last].value, "2"));
  ops->del(a, PFX "c");

  /* ---- a watch that drops itself from its own callback ---- */
  self_state = a;
  REQUIRE(ops->watch(a, PFX, on_self_unwatch, NULL, &self_handle) == DYN_OK);
  CHECK(WAIT_FOR(self_unwatched > 0, 3000));
  int seen = self_unwatched;
  ops->put(a, PFX "d", "x");
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, PFX "d", 0) >= 0, 3000));
  settle(100);
  CHECK_EQ_INT(self_unwatched, seen);
  ops->del(a, PFX "d");

  /* ---- a session closed from inside its own watch callback ---- */
  ops->put(a, PFX "e1", "1");
  ops->put(a, PFX "e2", "2");
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, PFX "e2", 0) >= 0, 3000));
  void *ch = NULL;
  char two[160];
  snprintf(two, sizeof two, "http://127.0.0.1:%d,%s/", free_port(), etcd_url);
  REQUIRE(dyn__etcd_open(rt, two, &closer_state) == DYN_OK); /* the second URL answers */
  REQUIRE(ops->watch(closer_state, PFX, on_closer, NULL, &ch) == DYN_OK);
  CHECK(WAIT_FOR(closer_state == NULL, 3000));
  settle(100);
  CHECK_EQ_INT(closer_calls, 1); /* nothing after close, not even the rest of the snapshot */
  ops->del(a, PFX "e1");
  ops->del(a, PFX "e2");

  /* ---- a second session: latency, then close revokes at once ---- */
  REQUIRE(dyn__etcd_open(rt, etcd_url, &b) == DYN_OK);
  CHECK(ops->session_id(b) != a_id);
  char key_b[128];
  snprintf(key_b, sizeof key_b, PFX "%" PRIx64, ops->session_id(b));
  enum { N = 50 };
  double lat[N];
  int got = 0;
  for (int i = 0; i < N; i++) {
    char v[32];
    snprintf(v, sizeof v, "{\"n\":%d}", i);
    from = w.n;
    double t0 = h_now_ms_f();
    ops->put(b, key_b, v);
    if (!WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, key_b, from) >= 0, 3000)) break;
    int at = rec_find(&w, DYN_WATCH_PUT, key_b, from);
    if (strcmp(w.e[at].value, v)) break;
    lat[got++] = w.e[at].t - t0;
  }
  CHECK_EQ_INT(got, N);
  if (got) {
    qsort(lat, (size_t)got, sizeof lat[0], cmp_double);
    printf("put -> watch PUT latency over %d puts: median %.2f ms, p90 %.2f ms, max %.2f ms\n",
           got, lat[got / 2], lat[got * 9 / 10], lat[got - 1]);
  }
  from = w.n;
  double t0 = h_now_ms_f();
  ops->close(b);
  b = NULL;
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_DELETE, key_b, from) >= 0, 2000));
  int del_b = rec_find(&w, DYN_WATCH_DELETE, key_b, from);
  if (del_b >= 0) printf("closed session's key deleted after %.1f ms\n", w.e[del_b].t - t0);

  /* ---- kill -9 of a process holding a lease ---- */
  char key_k[128] = PFX "killed";
  from = w.n;
  pid_t child = spawn_child(key_k);
  CHECK(child > 0);
  if (child > 0) {
    CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, key_k, from) >= 0, 3000));
    /* Frozen past its TTL, the process loses its lease and keys; thawed,
     * it learns so from its next keepalive and puts them back. */
    from = w.n;
    kill(child, SIGSTOP);
    CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_DELETE, key_k, from) >= 0, (TTL_S + 4) * 1000));
    kill(child, SIGCONT);
    t0 = h_now_ms_f();
    CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, key_k, from) >= 0, 5000));
    int back = rec_find(&w, DYN_WATCH_PUT, key_k, from);
    if (back >= 0) printf("thawed process's key back after %.0f ms\n", w.e[back].t - t0);
    from = w.n;
    t0 = h_now_ms_f();
    h_kill9(child);
    CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_DELETE, key_k, from) >= 0, (TTL_S + 4) * 1000));
    int at = rec_find(&w, DYN_WATCH_DELETE, key_k, from);
    if (at >= 0) {
      double dt = w.e[at].t - t0;
      printf("killed process's key deleted after %.0f ms (TTL %d s)\n", dt, TTL_S);
      CHECK(dt <= (TTL_S + 1.5) * 1000);
    }
  }

  /* ---- the lease revoked under a live session: same id, keys back ---- */
  from = w.n;
  CHECK(raw_revoke(a_id) == 0);
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_DELETE, key_a, from) >= 0, 2000));
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, key_a, rec_find(&w, DYN_WATCH_DELETE, key_a, from)) >= 0,
                 TTL_S * 1000 + 3000));
  CHECK_EQ_U64(ops->session_id(a), a_id);
  raw_key_lease(key_a, lease_str, sizeof lease_str);
  CHECK_EQ_STR(lease_str, want);

  /* ---- refused id: the session id changes and the hook moves keys ---- */
  dyn__etcd_options_t fo = {.fresh_id = 1};
  REQUIRE(dyn__etcd_open_opts(rt, etcd_url, &fo, &fresh) == DYN_OK);
  hook_state = fresh;
  dyn__etcd_set_session_hook(fresh, on_session, NULL);
  uint64_t f_old = ops->session_id(fresh);
  char key_f[128];
  snprintf(key_f, sizeof key_f, PFX "%" PRIx64, f_old);
  ops->put(fresh, key_f, "{\"address\":\"127.0.0.1:3\"}");
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, key_f, 0) >= 0, 3000));
  CHECK(raw_revoke(f_old) == 0);
  CHECK(WAIT_FOR(session_changes == 1, TTL_S * 1000 + 3000));
  uint64_t f_new = ops->session_id(fresh);
  CHECK(f_new != f_old && hook_old == f_old && hook_new == f_new);
  char key_f2[128];
  snprintf(key_f2, sizeof key_f2, PFX "%" PRIx64, f_new);
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, key_f2, 0) >= 0, 3000));
  CHECK(rec_find(&w, DYN_WATCH_DELETE, key_f, 0) >= 0);
  settle(200);
  raw_key_lease(key_f, lease_str, sizeof lease_str);
  CHECK_EQ_STR(lease_str, ""); /* the old key is not put back */
  raw_key_lease(key_f2, lease_str, sizeof lease_str);
  snprintf(want, sizeof want, "%" PRIu64, f_new);
  CHECK_EQ_STR(lease_str, want);
  ops->close(fresh);
  fresh = NULL;

  /* ---- lease ids above 2^53 survive exactly ---- */
  dyn__etcd_options_t bo = {.lease_id = (1ull << 53) + 1};
  REQUIRE(dyn__etcd_open_opts(rt, etcd_url, &bo, &big) == DYN_OK);
  CHECK_EQ_U64(ops->session_id(big), (1ull << 53) + 1);
  CHECK((uint64_t)(double)ops->session_id(big) != ops->session_id(big)); /* no double holds it */
  ops->put(big, PFX "big", "x");
  CHECK(WAIT_FOR((raw_key_lease(PFX "big", lease_str, sizeof lease_str), lease_str[0]), 3000));
  CHECK_EQ_STR(lease_str, "9007199254740993");
  ops->close(big);
  big = NULL;
  raw_key_lease(PFX "big", lease_str, sizeof lease_str);
  CHECK_EQ_STR(lease_str, ""); /* revoked at close */

  /* ---- etcd restarts under an open watch ---- */
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_DELETE, PFX "big", 0) >= 0, 2000));
  from = w.n;
  CHECK(etcd_stop() == 0);
  settle(300); /* let the backend notice while etcd is away */
  REQUIRE(etcd_start() == 0);
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_SYNCED, NULL, from) >= 0, 10000));
  int reset = rec_find(&w, DYN_WATCH_RESET, NULL, from);
  int resynced = rec_find(&w, DYN_WATCH_SYNCED, NULL, from);
  int again = rec_find(&w, DYN_WATCH_PUT, key_a, reset);
  CHECK(reset >= 0 && again > reset && again < resynced);
  CHECK_EQ_INT(rec_find(&w, DYN_WATCH_PUT, key_b, reset), -1); /* closed: gone */
  if (reset >= 0) printf("RESET + snapshot %d event(s) after the restart\n", resynced - reset - 1);
  /* The stream is back: a change after the restart arrives. */
  ops->put(a, PFX "after", "y");
  CHECK(WAIT_FOR(rec_find(&w, DYN_WATCH_PUT, PFX "after", resynced) >= 0, 3000));
  CHECK_EQ_U64(ops->session_id(a), a_id);

  ops->unwatch(a, wh);
  ops->close(a);
  settle(50);
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "child")) return child_main(argv[2], argv[3]);
  if (find_etcd()) {
    /* scripts/deps.sh installs it: a missing prerequisite fails. */
    printf("FAIL: no etcd binary on PATH (scripts/deps.sh installs etcd-server)\n");
    return 1;
  }
  h_init("etcd");
  char ttl[8];
  snprintf(ttl, sizeof ttl, "%d", TTL_S);
  setenv("DYN_ETCD_TTL", ttl, 1); /* the child's too */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  test_codec();
  int cport = free_port(), pport = free_port();
  REQUIRE(cport > 0 && pport > 0 && cport != pport);
  snprintf(etcd_url, sizeof etcd_url, "http://127.0.0.1:%d", cport);
  snprintf(peer_url, sizeof peer_url, "http://127.0.0.1:%d", pport);
  snprintf(etcd_dir, sizeof etcd_dir, "%s/etcd-data", h_dir);
  snprintf(etcd_log, sizeof etcd_log, "%s/etcd.log", h_dir);
  uv_loop_init(&loop);
  dyn_runtime_t *rt = mini_runtime(&loop);
  test_open_fails(rt);
  REQUIRE(etcd_start() == 0);
  run_tests(rt);
  etcd_stop();
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0); /* every handle closed */
  free(rt);
  curl_global_cleanup();
  TEST_END();
}
