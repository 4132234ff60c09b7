/* test_registry.c - discovery through the embedded control plane.
 *
 * Runtimes in this process (two sharing one loop, others on their own)
 * and a `dynamo control` process: put, watch snapshot / SYNCED / PUT /
 * DELETE, keys dying with their session, a worker killed with SIGKILL
 * disappearing within a second, and RESET + a fresh snapshot when the
 * control plane restarts. Last, a control plane hosted in this process.
 */
#include "harness.h"

typedef struct ev {
  int kind;
  char key[256];
  char value[512];
  double t;
} ev_t;

typedef struct rec {
  int n;
  ev_t e[256];
} rec_t;

static void on_watch(dyn_watch_event_t kind, const char *key, const char *value, size_t len,
                     void *ud) {
  rec_t *r = ud;
  if (r->n >= 256) return;
  ev_t *e = &r->e[r->n++];
  e->kind = kind;
  e->t = h_now_ms_f();
  snprintf(e->key, sizeof e->key, "%s", key ? key : "");
  snprintf(e->value, sizeof e->value, "%s", value ? value : "");
  if (value && strlen(value) != len) e->kind = -1; /* value must match its length */
}

/* Index of the first event of kind for key (NULL: any) at or after from. */
static int find(const rec_t *r, int from, int kind, const char *key) {
  for (int i = from; i < r->n; i++)
    if (r->e[i].kind == kind && (!key || !strcmp(r->e[i].key, key))) return i;
  return -1;
}

static int count_kind(const rec_t *r, int kind) {
  int n = 0;
  for (int i = 0; i < r->n; i++) n += r->e[i].kind == kind;
  return n;
}

static void test_no_control(void) {
  dyn_runtime_options_t o;
  dyn_runtime_options_init(&o);
  char path[256];
  snprintf(path, sizeof path, "%s/nobody.sock", h_dir);
  o.control_socket = path;
  dyn_runtime_t *rt = NULL;
  uint64_t t0 = h_now_ms();
  CHECK_STATUS(dyn_runtime_create(&o, &rt), DYN_ECONTROL);
  CHECK(rt == NULL);
  CHECK_LE_INT(h_now_ms() - t0, 1000); /* a missing socket fails at once */
}

/* Two runtimes on one loop. */
static void test_shared_loop(void) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  dyn_runtime_t *a = h_runtime(&loop), *b = h_runtime(&loop);
  REQUIRE(a && b);
  CHECK(dyn_runtime_loop(a) == &loop && dyn_runtime_loop(b) == &loop);
  CHECK(dyn_runtime_instance_id(a) != 0);
  CHECK(dyn_runtime_instance_id(a) != dyn_runtime_instance_id(b));

  CHECK_STATUS(dyn_discovery_put(a, "", "x"), DYN_EINVAL);
  CHECK_STATUS(dyn_discovery_put(a, "k", NULL), DYN_EINVAL);
  dyn_watch_t *bad;
  CHECK_STATUS(dyn_discovery_watch(a, "", on_watch, NULL, &bad), DYN_EINVAL);

  /* A puts, then watches on the same session: once its own snapshot came,
   * the control plane holds the key, so B's snapshot must contain it. */
  rec_t ra = {0}, rb = {0};
  CHECK_STATUS(dyn_discovery_put(a, "reg/one", "1"), DYN_OK);
  CHECK_STATUS(dyn_discovery_put(a, "other/x", "x"), DYN_OK);
  dyn_watch_t *wa, *wb;
  CHECK_STATUS(dyn_discovery_watch(a, "reg/", on_watch, &ra, &wa), DYN_OK);
  CHECK(PUMP_UNTIL(find(&ra, 0, DYN_WATCH_SYNCED, NULL) >= 0, 3000, a));
  CHECK_STATUS(dyn_discovery_watch(b, "reg/", on_watch, &rb, &wb), DYN_OK);
  CHECK(PUMP_UNTIL(find(&rb, 0, DYN_WATCH_SYNCED, NULL) >= 0, 3000, b));
  CHECK_EQ_INT(rb.n, 2);
  CHECK_EQ_INT(rb.e[0].kind, DYN_WATCH_PUT);
  CHECK_EQ_STR(rb.e[0].key, "reg/one");
  CHECK_EQ_STR(rb.e[0].value, "1");
  CHECK_EQ_INT(rb.e[1].kind, DYN_WATCH_SYNCED);

  /* Changes after SYNCED, in order; keys outside the prefix never show. */
  CHECK_STATUS(dyn_discovery_put(a, "reg/two", "2"), DYN_OK);
  CHECK_STATUS(dyn_discovery_put(a, "reg/one", "1b"), DYN_OK);
  CHECK_STATUS(dyn_discovery_put(a, "other/y", "y"), DYN_OK);
  CHECK_STATUS(dyn_discovery_delete(a, "reg/two"), DYN_OK);
  CHECK_STATUS(dyn_discovery_put(a, "reg/end", ""), DYN_OK);
  CHECK(PUMP_UNTIL(find(&rb, 0, DYN_WATCH_PUT, "reg/end") >= 0, 3000, a));
  CHECK_EQ_INT(rb.n, 6);
  CHECK(rb.n == 6 && rb.e[2].kind == DYN_WATCH_PUT && !strcmp(rb.e[2].key, "reg/two") &&
        !strcmp(rb.e[2].value, "2"));
  CHECK(rb.n == 6 && rb.e[3].kind == DYN_WATCH_PUT && !strcmp(rb.e[3].key, "reg/one") &&
        !strcmp(rb.e[3].value, "1b"));
  CHECK(rb.n == 6 && rb.e[4].kind == DYN_WATCH_DELETE && !strcmp(rb.e[4].key, "reg/two"));
  CHECK(rb.n == 6 && rb.e[5].kind == DYN_WATCH_PUT && !strcmp(rb.e[5].value, ""));
  CHECK_EQ_INT(find(&rb, 0, DYN_WATCH_PUT, "other/y"), -1);
  CHECK_EQ_INT(count_kind(&rb, -1), 0);

  /* A value with bytes JSON would carry: delivered as given. */
  const char *json = "{\"address\":\"127.0.0.1:1\",\"instance_id\":\"7\"}";
  CHECK_STATUS(dyn_discovery_put(b, "reg/json", json), DYN_OK);
  CHECK(PUMP_UNTIL(find(&ra, 0, DYN_WATCH_PUT, "reg/json") >= 0, 3000, a));
  int i = find(&ra, 0, DYN_WATCH_PUT, "reg/json");
  CHECK(i >= 0 && !strcmp(ra.e[i].value, json));

  /* A second watch on the same session gets its own snapshot. */
  rec_t ra2 = {0};
  dyn_watch_t *wa2;
  CHECK_STATUS(dyn_discovery_watch(a, "reg/j", on_watch, &ra2, &wa2), DYN_OK);
  CHECK(PUMP_UNTIL(find(&ra2, 0, DYN_WATCH_SYNCED, NULL) >= 0, 3000, a));
  CHECK_EQ_INT(ra2.n, 2);
  CHECK_EQ_STR(ra2.e[0].key, "reg/json");
  dyn_discovery_unwatch(wa2);

  /* Unwatched: B hears nothing more, while A still does. */
  dyn_discovery_unwatch(wb);
  int before = rb.n;
  CHECK_STATUS(dyn_discovery_put(a, "reg/late", "l"), DYN_OK);
  CHECK(PUMP_UNTIL(find(&ra, 0, DYN_WATCH_PUT, "reg/late") >= 0, 3000, a));
  PUMP_FOR(50, a);
  CHECK_EQ_INT(rb.n, before);

  /* B goes away without deleting: its key dies with its session. */
  int from = ra.n;
  dyn_runtime_destroy(b);
  CHECK(PUMP_UNTIL(find(&ra, from, DYN_WATCH_DELETE, "reg/json") >= 0, 1000, a));

  dyn_discovery_unwatch(wa);
  dyn_runtime_destroy(a);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0); /* nothing of either runtime left on it */
}

static char worker_key[256];
static int saw_worker_put(const rec_t *r) { return find(r, 0, DYN_WATCH_PUT, worker_key) >= 0; }

/* A worker process killed with SIGKILL: its instance key goes within 1 s. */
static void test_kill(dyn_runtime_t *c, rec_t *rc_) {
  h_worker_t w;
  REQUIRE(h_start_worker("regkill", NULL, &w) == 0);
  snprintf(worker_key, sizeof worker_key, "instances/regkill/echo/generate:%" PRIx64, w.id);
  dyn_watch_t *wt;
  CHECK_STATUS(dyn_discovery_watch(c, "instances/regkill/", on_watch, rc_, &wt), DYN_OK);
  CHECK(PUMP_UNTIL(saw_worker_put(rc_), 3000, c));
  int i = find(rc_, 0, DYN_WATCH_PUT, worker_key);
  if (i >= 0) {
    char want[200];
    snprintf(want, sizeof want, "\"address\":\"%s\"", w.addr);
    CHECK_MSG(strstr(rc_->e[i].value, want) != NULL, "value %s lacks %s", rc_->e[i].value, want);
    snprintf(want, sizeof want, "\"instance_id\":\"%" PRIu64 "\"", w.id);
    CHECK_MSG(strstr(rc_->e[i].value, want) != NULL, "value %s lacks %s", rc_->e[i].value, want);
  }
  int from = rc_->n;
  double t0 = h_now_ms_f();
  kill(w.pid, SIGKILL);
  int got = PUMP_UNTIL(find(rc_, from, DYN_WATCH_DELETE, worker_key) >= 0, 3000, c);
  CHECK(got);
  if (got) {
    double ms = rc_->e[find(rc_, from, DYN_WATCH_DELETE, worker_key)].t - t0;
    printf("measured: watch DELETE %.2f ms after SIGKILL of the worker\n", ms);
    CHECK_MSG(ms < 1000.0, "DELETE took %.1f ms", ms);
  }
  h_wait_exit(w.pid, 2000, NULL);
  dyn_discovery_unwatch(wt);
}

/* The control plane dies and comes back: watchers see RESET, then a fresh
 * snapshot that holds the keys every session put back. */
static void test_control_restart(dyn_runtime_t *c, pid_t *control) {
  rec_t r = {0};
  dyn_watch_t *wt;
  CHECK_STATUS(dyn_discovery_put(c, "again/mine", "m"), DYN_OK);
  CHECK_STATUS(dyn_discovery_watch(c, "again/", on_watch, &r, &wt), DYN_OK);
  CHECK(PUMP_UNTIL(find(&r, 0, DYN_WATCH_SYNCED, NULL) >= 0, 3000, c));
  CHECK(find(&r, 0, DYN_WATCH_PUT, "again/mine") >= 0);

  h_kill9(*control);
  CHECK(PUMP_UNTIL(find(&r, 0, DYN_WATCH_RESET, NULL) >= 0, 2000, c));
  /* While it is down, new runtimes fail clearly. */
  dyn_runtime_t *none = NULL;
  CHECK_STATUS(dyn_runtime_create(NULL, &none), DYN_ECONTROL);

  int from = r.n;
  *control = h_start_control();
  REQUIRE(*control > 0);
  CHECK(PUMP_UNTIL(find(&r, from, DYN_WATCH_SYNCED, NULL) >= 0, 5000, c));
  int put = find(&r, from, DYN_WATCH_PUT, "again/mine");
  int synced = find(&r, from, DYN_WATCH_SYNCED, NULL);
  CHECK_MSG(put >= 0 && put < synced, "own key not in the fresh snapshot (put %d synced %d)",
            put, synced);

  /* A newcomer sees the key that was put back. */
  dyn_runtime_t *d = h_runtime(NULL);
  REQUIRE(d);
  rec_t rd = {0};
  dyn_watch_t *wd;
  CHECK_STATUS(dyn_discovery_watch(d, "again/", on_watch, &rd, &wd), DYN_OK);
  CHECK(PUMP_UNTIL(find(&rd, 0, DYN_WATCH_SYNCED, NULL) >= 0, 3000, d));
  CHECK(find(&rd, 0, DYN_WATCH_PUT, "again/mine") >= 0);
  dyn_discovery_unwatch(wd);
  dyn_runtime_destroy(d);
  dyn_discovery_unwatch(wt);
}

/* The control plane in this process, on the same loop as a runtime. */
static void test_in_process_control(void) {
  char path[256];
  snprintf(path, sizeof path, "%s/inproc.sock", h_dir);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  dyn_control_t *cp;
  REQUIRE(dyn_control_start(&loop, path, &cp) == DYN_OK);
  CHECK_EQ_STR(dyn_control_path(cp), path);
  dyn_runtime_options_t o;
  dyn_runtime_options_init(&o);
  o.control_socket = path;
  o.loop = &loop;
  dyn_runtime_t *rt = NULL;
  REQUIRE(dyn_runtime_create(&o, &rt) == DYN_OK);
  CHECK_EQ_INT(dyn_control_sessions(cp), 1);
  dyn_control_t *cp2;
  CHECK_STATUS(dyn_control_start(&loop, path, &cp2), DYN_EEXIST);
  CHECK_STATUS(dyn_discovery_put(rt, "in/a", "1"), DYN_OK);
  CHECK_STATUS(dyn_discovery_put(rt, "in/b", "2"), DYN_OK);
  CHECK(PUMP_UNTIL(dyn_control_keys(cp) == 2, 2000, rt));
  CHECK_STATUS(dyn_discovery_delete(rt, "in/a"), DYN_OK);
  CHECK(PUMP_UNTIL(dyn_control_keys(cp) == 1, 2000, rt));

  rec_t r = {0};
  dyn_watch_t *w;
  CHECK_STATUS(dyn_discovery_watch(rt, "in/", on_watch, &r, &w), DYN_OK);
  CHECK(PUMP_UNTIL(find(&r, 0, DYN_WATCH_SYNCED, NULL) >= 0, 2000, rt));
  dyn_control_stop(cp);
  CHECK(PUMP_UNTIL(find(&r, 0, DYN_WATCH_RESET, NULL) >= 0, 2000, rt));
  CHECK(access(path, F_OK) != 0); /* the socket file went with it */
  dyn_discovery_unwatch(w);
  dyn_runtime_destroy(rt);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void) {
  h_init("registry");
  test_no_control();
  pid_t control = h_start_control();
  REQUIRE(control > 0);
  test_shared_loop();

  dyn_runtime_t *c = h_runtime(NULL);
  REQUIRE(c);
  static rec_t rk;
  test_kill(c, &rk);
  test_control_restart(c, &control);
  dyn_runtime_destroy(c);

  test_in_process_control();
  TEST_END();
}
