/* test_events.c - publish/subscribe through the control plane.
 *
 * Two runtimes on their own loops: NATS-style wildcards, payload bytes
 * kept exactly (NUL, empty, large), component subjects, unsubscribe, and
 * a subscriber process that dies while events are published.
 */
#include "harness.h"

typedef struct sub {
  const char *name;
  int n;
  char last_subject[256];
  size_t last_len;
  unsigned char last[64];
  dyn_subscription_t *h;
} sub_t;

static void on_event(const char *subject, const void *data, size_t len, void *ud) {
  sub_t *s = ud;
  s->n++;
  snprintf(s->last_subject, sizeof s->last_subject, "%s", subject);
  s->last_len = len;
  memcpy(s->last, data, len < sizeof s->last ? len : sizeof s->last);
}

static dyn_runtime_t *a, *b;

/* b is subscribed once its own probe, published after its SUBs on the
 * same session, comes back. */
static void sync_subs(dyn_runtime_t *r, sub_t *probe_sub, const char *probe) {
  int before = probe_sub->n;
  CHECK_STATUS(dyn_publish(r, probe, "", 0), DYN_OK);
  CHECK(PUMP_UNTIL(probe_sub->n > before, 3000, a, b));
}

static void test_wildcards(void) {
  sub_t s_star = {.name = "ev.a.*"}, s_gt = {.name = "ev.>"}, s_exact = {.name = "ev.a.b"}, s_first = {.name = "*.x"},
        s_all = {.name = ">"}, s_mid = {.name = "ev.*.c.>"};
  sub_t *subs[] = {&s_star, &s_gt, &s_exact, &s_first, &s_all, &s_mid};
  for (size_t i = 0; i < 6; i++)
    CHECK_STATUS(dyn_subscribe(b, subs[i]->name, on_event, subs[i], &subs[i]->h), DYN_OK);
  sync_subs(b, &s_gt, "ev.sync");
  for (size_t i = 0; i < 6; i++) subs[i]->n = 0;

  struct { const char *subject; int star, gt, exact, first, all, mid; } cases[] = {
      {"ev.a.b", 1, 1, 1, 0, 1, 0},
      {"ev.a.c", 1, 1, 0, 0, 1, 0},
      {"ev.a.b.c", 0, 1, 0, 0, 1, 0},
      {"ev", 0, 0, 0, 0, 1, 0},
      {"ev.x", 0, 1, 0, 1, 1, 0},
      {"q.x", 0, 0, 0, 1, 1, 0},
      {"ev.z.c.d", 0, 1, 0, 0, 1, 1},
      {"ev.z.c", 0, 1, 0, 0, 1, 0},
  };
  int want[6] = {0};
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    CHECK_STATUS(dyn_publish(a, cases[k].subject, cases[k].subject, strlen(cases[k].subject)),
                 DYN_OK);
    want[0] += cases[k].star;
    want[1] += cases[k].gt;
    want[2] += cases[k].exact;
    want[3] += cases[k].first;
    want[4] += cases[k].all;
    want[5] += cases[k].mid;
  }
  /* One publisher, one subscriber session: delivery keeps order, so when
   * the end marker is in, everything before it is too. */
  CHECK_STATUS(dyn_publish(a, "end.marker", "", 0), DYN_OK);
  CHECK(PUMP_UNTIL(s_all.n == want[4] + 1, 3000, a, b));
  for (size_t i = 0; i < 6; i++) {
    int w = want[i] + (i == 4); /* '>' saw the marker too */
    CHECK_MSG(subs[i]->n == w, "subscription %s got %d, want %d", subs[i]->name, subs[i]->n,
              w);
  }
  CHECK_EQ_STR(s_all.last_subject, "end.marker");
  CHECK_EQ_STR(s_exact.last_subject, "ev.a.b");
  CHECK(s_exact.last_len == 6 && !memcmp(s_exact.last, "ev.a.b", 6));

  /* Unsubscribed: no more deliveries there, others unaffected. */
  dyn_unsubscribe(s_star.h);
  int n_star = s_star.n, n_gt = s_gt.n;
  CHECK_STATUS(dyn_publish(a, "ev.a.q", "1", 1), DYN_OK);
  CHECK_STATUS(dyn_publish(a, "end.marker", "", 0), DYN_OK);
  CHECK(PUMP_UNTIL(s_gt.n == n_gt + 1 && !strcmp(s_all.last_subject, "end.marker") &&
                       s_all.n == want[4] + 3,
                   3000, a, b));
  PUMP_FOR(30, a, b);
  CHECK_EQ_INT(s_star.n, n_star);
  for (size_t i = 1; i < 6; i++) dyn_unsubscribe(subs[i]->h);
}

static void test_payloads(void) {
  sub_t s = {.name = "bin.>"};
  CHECK_STATUS(dyn_subscribe(b, "bin.>", on_event, &s, &s.h), DYN_OK);
  sync_subs(b, &s, "bin.sync");
  s.n = 0;
  const unsigned char bin[] = {0, 1, 2, 0, 255, 0};
  CHECK_STATUS(dyn_publish(a, "bin.nul", bin, sizeof bin), DYN_OK);
  CHECK(PUMP_UNTIL(s.n == 1, 3000, a, b));
  CHECK(s.last_len == sizeof bin && !memcmp(s.last, bin, sizeof bin));
  CHECK_STATUS(dyn_publish(a, "bin.empty", NULL, 0), DYN_OK);
  CHECK(PUMP_UNTIL(s.n == 2, 3000, a, b));
  CHECK_EQ_INT(s.last_len, 0);
  /* 4 MiB: several reads and writes on the way. */
  size_t big = 4u << 20;
  unsigned char *p = malloc(big);
  REQUIRE(p);
  for (size_t i = 0; i < big; i++) p[i] = (unsigned char)(i * 31u);
  CHECK_STATUS(dyn_publish(a, "bin.big", p, big), DYN_OK);
  CHECK(PUMP_UNTIL(s.n == 3, 5000, a, b));
  CHECK_EQ_INT(s.last_len, big);
  CHECK(!memcmp(s.last, p, sizeof s.last));
  free(p);
  /* Past the frame limit: refused up front. */
  CHECK_STATUS(dyn_publish(a, "bin.huge", "", DYN_DEFAULT_MAX_FRAME), DYN_ETOOBIG);
  /* Bad subjects. */
  CHECK_STATUS(dyn_publish(a, "bin.*", "x", 1), DYN_EINVAL);
  CHECK_STATUS(dyn_publish(a, "bin..x", "x", 1), DYN_EINVAL);
  CHECK_STATUS(dyn_publish(a, "", "x", 1), DYN_EINVAL);
  dyn_subscription_t *bad;
  CHECK_STATUS(dyn_subscribe(b, "bin.>.x", on_event, &s, &bad), DYN_EINVAL);
  CHECK_STATUS(dyn_subscribe(b, "bin x", on_event, &s, &bad), DYN_EINVAL);
  CHECK_STATUS(dyn_subscribe(b, "bin.x", NULL, &s, &bad), DYN_EINVAL);
  dyn_unsubscribe(s.h);
}

static void test_component(void) {
  dyn_namespace_t *ns;
  dyn_component_t *comp, *comp_b;
  REQUIRE(dyn_runtime_namespace(a, "ns1", &ns) == DYN_OK);
  REQUIRE(dyn_namespace_component(ns, "worker", &comp) == DYN_OK);
  char subject[128];
  CHECK_STATUS(dyn_component_subject(comp, "kv_events", subject, sizeof subject), DYN_OK);
  CHECK_EQ_STR(subject, "namespace.ns1.component.worker.kv_events");
  char tiny[8];
  CHECK_STATUS(dyn_component_subject(comp, "kv_events", tiny, sizeof tiny), DYN_EINVAL);
  CHECK_STATUS(dyn_component_subject(comp, "bad.*", subject, sizeof subject), DYN_EINVAL);

  dyn_namespace_t *nsb;
  REQUIRE(dyn_runtime_namespace(b, "ns1", &nsb) == DYN_OK);
  REQUIRE(dyn_namespace_component(nsb, "worker", &comp_b) == DYN_OK);
  sub_t s_comp = {.name = "component"}, s_wild = {.name = "namespace.ns1.component.*.kv_events"};
  CHECK_STATUS(dyn_component_subscribe(comp_b, "kv_events", on_event, &s_comp, &s_comp.h),
               DYN_OK);
  CHECK_STATUS(dyn_subscribe(b, s_wild.name, on_event, &s_wild, &s_wild.h), DYN_OK);
  sync_subs(b, &s_comp, "namespace.ns1.component.worker.kv_events");
  s_comp.n = s_wild.n = 0;
  CHECK_STATUS(dyn_component_publish(comp, "kv_events", "stored", 6), DYN_OK);
  CHECK(PUMP_UNTIL(s_comp.n == 1 && s_wild.n == 1, 3000, a, b));
  CHECK_EQ_STR(s_comp.last_subject, "namespace.ns1.component.worker.kv_events");
  CHECK(s_comp.last_len == 6 && !memcmp(s_comp.last, "stored", 6));
  /* Another component's events stay out of the component subscription. */
  dyn_component_t *other;
  REQUIRE(dyn_namespace_component(ns, "router", &other) == DYN_OK);
  CHECK_STATUS(dyn_component_publish(other, "kv_events", "o", 1), DYN_OK);
  CHECK(PUMP_UNTIL(s_wild.n == 2, 3000, a, b));
  PUMP_FOR(30, a, b);
  CHECK_EQ_INT(s_comp.n, 1);
  CHECK_EQ_STR(s_wild.last_subject, "namespace.ns1.component.router.kv_events");
  dyn_unsubscribe(s_comp.h);
  dyn_unsubscribe(s_wild.h);
}

/* Same session, several subscriptions: each its own delivery. */
static void test_self_and_duplicates(void) {
  sub_t one = {.name = "self.x"}, two = {.name = "self.x"};
  CHECK_STATUS(dyn_subscribe(a, "self.x", on_event, &one, &one.h), DYN_OK);
  CHECK_STATUS(dyn_subscribe(a, "self.x", on_event, &two, &two.h), DYN_OK);
  CHECK_STATUS(dyn_publish(a, "self.x", "me", 2), DYN_OK);
  CHECK(PUMP_UNTIL(one.n == 1 && two.n == 1, 3000, a));
  dyn_unsubscribe(one.h);
  CHECK_STATUS(dyn_publish(a, "self.x", "me", 2), DYN_OK);
  CHECK(PUMP_UNTIL(two.n == 2, 3000, a));
  PUMP_FOR(30, a);
  CHECK_EQ_INT(one.n, 1);
  dyn_unsubscribe(two.h);
  /* dyn_subscribe without an out pointer is allowed (never unsubscribed:
   * freed with the runtime). */
  static sub_t keep = {.name = "keep"};
  CHECK_STATUS(dyn_subscribe(a, "keep.>", on_event, &keep, NULL), DYN_OK);
}

/* A subscriber that goes away mid-flow does not disturb the rest. */
static void test_subscriber_leaves(void) {
  dyn_runtime_t *c = h_runtime(NULL);
  REQUIRE(c);
  sub_t sc = {.name = "gone.>"}, sb = {.name = "gone.>"};
  CHECK_STATUS(dyn_subscribe(c, "gone.>", on_event, &sc, &sc.h), DYN_OK);
  CHECK_STATUS(dyn_subscribe(b, "gone.>", on_event, &sb, &sb.h), DYN_OK);
  sync_subs(b, &sb, "gone.sync");
  sub_t cprobe = {.name = "cprobe"};
  CHECK_STATUS(dyn_subscribe(c, "cprobe", on_event, &cprobe, &cprobe.h), DYN_OK);
  CHECK_STATUS(dyn_publish(c, "cprobe", "", 0), DYN_OK);
  CHECK(PUMP_UNTIL(cprobe.n == 1, 3000, c));
  /* A burst reaches c's socket, and c goes without reading it. */
  for (int i = 0; i < 100; i++) dyn_publish(a, "gone.burst", "x", 1);
  PUMP_FOR(20, a);
  dyn_unsubscribe(sc.h);
  dyn_unsubscribe(cprobe.h);
  dyn_runtime_destroy(c);
  int nb = sb.n;
  for (int i = 0; i < 100; i++) dyn_publish(a, "gone.burst", "x", 1);
  CHECK(PUMP_UNTIL(sb.n == nb + 200, 3000, a, b));
  dyn_unsubscribe(sb.h);
}

/* A large publish right before the runtime goes: at most once, so it may
 * or may not arrive, but the runtime must free everything and touch
 * nothing afterwards, whether or not the bytes were all written. */
static void test_publish_then_destroy(void) {
  sub_t s = {.name = "last.>"};
  CHECK_STATUS(dyn_subscribe(b, "last.>", on_event, &s, &s.h), DYN_OK);
  sync_subs(b, &s, "last.sync");
  s.n = 0;
  size_t big = 8u << 20;
  unsigned char *p = malloc(big);
  REQUIRE(p);
  memset(p, 7, big);
  for (int round = 0; round < 2; round++) {
    dyn_runtime_t *c = h_runtime(NULL);
    REQUIRE(c);
    CHECK_STATUS(dyn_publish(c, "last.words", p, big), DYN_OK);
    if (round == 1) {
      dyn_runtime_flush(c); /* part of it written, the rest in flight */
      CHECK_EQ_INT(dyn_runtime_shutdown(c, 100), 0);
    }
    dyn_runtime_destroy(c);
  }
  free(p);
  PUMP_FOR(300, a, b);
  CHECK_LE_INT(s.n, 2);
  if (s.n) CHECK_EQ_INT(s.last_len, big);
  dyn_unsubscribe(s.h);
}

int main(void) {
  h_init("events");
  REQUIRE(h_start_control() > 0);
  a = h_runtime(NULL);
  b = h_runtime(NULL);
  REQUIRE(a && b);
  test_wildcards();
  test_payloads();
  test_component();
  test_self_and_duplicates();
  test_subscriber_leaves();
  test_publish_then_destroy();
  dyn_runtime_destroy(b);
  dyn_runtime_destroy(a);
  TEST_END();
}
