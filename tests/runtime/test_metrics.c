/* test_metrics.c - the Prometheus registry (src/runtime/metrics/metrics.c): exact
 * exposition text for counters, gauges and histograms (HELP/TYPE, label
 * escaping, cumulative buckets, +Inf == _count, _sum), series reuse, and
 * rejection of bad names and bounds. */
#include "harness.h"
#include "dynamo/metrics.h"

static void test_render(void) {
  dyn_metrics_t *m = dyn_metrics_new();
  REQUIRE(m);
  static const char *const labels[] = {"model", "status", NULL};
  dyn_metric_t *c, *g, *h;
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_COUNTER, "x_total", "Things\ncounted.", labels,
                                NULL, 0, &c), DYN_OK);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_GAUGE, "x_inflight", "Now.", NULL, NULL, 0, &g),
               DYN_OK);
  static const double b[] = {0.1, 1, 2.5};
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_HISTOGRAM, "x_seconds", "Time.", labels + 1, b, 3,
                                &h), DYN_OK);
  const char *v1[] = {"m\"1\\", "ok"};
  dyn_series_t *s1 = dyn_metric_series(c, v1);
  CHECK(s1 == dyn_metric_series(c, v1)); /* the same series again */
  dyn_series_add(s1, 2);
  dyn_series_add(s1, -5); /* a counter never goes down */
  const char *v2[] = {"m", "error"};
  dyn_series_add(dyn_metric_series(c, v2), 1);
  dyn_series_t *gs = dyn_metric_series(g, NULL);
  dyn_series_add(gs, 3);
  dyn_series_add(gs, -1);
  const char *hv[] = {"a"};
  dyn_series_t *hs = dyn_metric_series(h, hv);
  dyn_series_observe(hs, 0.05);
  dyn_series_observe(hs, 0.1); /* le is inclusive */
  dyn_series_observe(hs, 2);
  dyn_series_observe(hs, 100);
  size_t len;
  char *text = dyn_metrics_render(m, &len);
  REQUIRE(text);
  CHECK_EQ_INT((int)len, (int)strlen(text));
  const char *want =
      "# HELP x_total Things\\ncounted.\n"
      "# TYPE x_total counter\n"
      "x_total{model=\"m\\\"1\\\\\",status=\"ok\"} 2\n"
      "x_total{model=\"m\",status=\"error\"} 1\n"
      "# HELP x_inflight Now.\n"
      "# TYPE x_inflight gauge\n"
      "x_inflight 2\n"
      "# HELP x_seconds Time.\n"
      "# TYPE x_seconds histogram\n"
      "x_seconds_bucket{status=\"a\",le=\"0.1\"} 2\n"
      "x_seconds_bucket{status=\"a\",le=\"1\"} 2\n"
      "x_seconds_bucket{status=\"a\",le=\"2.5\"} 3\n"
      "x_seconds_bucket{status=\"a\",le=\"+Inf\"} 4\n"
      "x_seconds_sum{status=\"a\"} 102.15\n"
      "x_seconds_count{status=\"a\"} 4\n";
  CHECK_MSG(!strcmp(text, want), "got:\n%s", text);
  free(text);
  dyn_metrics_free(m);
}

static void test_unlabelled_histogram(void) {
  dyn_metrics_t *m = dyn_metrics_new();
  dyn_metric_t *h;
  static const double b[] = {1};
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_HISTOGRAM, "h", "", NULL, b, 1, &h), DYN_OK);
  dyn_series_observe(dyn_metric_series(h, NULL), 0.5);
  char *text = dyn_metrics_render(m, NULL);
  CHECK(text && strstr(text, "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n"));
  free(text);
  dyn_metrics_free(m);
}

static void test_rejects(void) {
  dyn_metrics_t *m = dyn_metrics_new();
  dyn_metric_t *f;
  static const double up[] = {1, 2}, down[] = {2, 1};
  static const char *const bad_label[] = {"le", NULL};
  static const char *const colon_label[] = {"a:b", NULL};
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_COUNTER, "1abc", "", NULL, NULL, 0, &f), DYN_EINVAL);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_COUNTER, "a-b", "", NULL, NULL, 0, &f), DYN_EINVAL);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_HISTOGRAM, "h", "", NULL, down, 2, &f), DYN_EINVAL);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_HISTOGRAM, "h", "", NULL, up, 0, &f), DYN_EINVAL);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_HISTOGRAM, "h", "", bad_label, up, 2, &f),
               DYN_EINVAL);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_GAUGE, "g", "", colon_label, NULL, 0, &f),
               DYN_EINVAL);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_GAUGE, "ns:g", "", NULL, NULL, 0, &f), DYN_OK);
  char *text = dyn_metrics_render(m, NULL);
  CHECK(text && !strcmp(text, "# HELP ns:g \n# TYPE ns:g gauge\n"));
  free(text);
  dyn_metrics_free(m);
}

/* Gauges can be set; a name registered again gives the same family when
 * type and labels agree (independent parts of a process share one) and
 * DYN_EEXIST when they do not; the default registry is one per process. */
static void test_set_share_default(void) {
  dyn_metrics_t *m = dyn_metrics_new();
  static const char *const l1[] = {"endpoint", NULL}, *const l2[] = {"other", NULL};
  dyn_metric_t *a, *b, *c;
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_GAUGE, "q", "Queue.", l1, NULL, 0, &a), DYN_OK);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_GAUGE, "q", "Queue.", l1, NULL, 0, &b), DYN_OK);
  CHECK(a == b);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_GAUGE, "q", "", l2, NULL, 0, &c), DYN_EEXIST);
  CHECK_STATUS(dyn_metrics_add(m, DYN_METRIC_COUNTER, "q", "", l1, NULL, 0, &c), DYN_EEXIST);
  const char *v[] = {"e"};
  dyn_series_t *s = dyn_metric_series(a, v);
  dyn_series_add(s, 5);
  dyn_series_set(s, 2);
  dyn_metric_t *k;
  REQUIRE(dyn_metrics_add(m, DYN_METRIC_COUNTER, "k_total", "", NULL, NULL, 0, &k) == DYN_OK);
  dyn_series_t *ks = dyn_metric_series(k, NULL);
  dyn_series_add(ks, 3);
  dyn_series_set(ks, 1); /* not a gauge: ignored */
  char *text = dyn_metrics_render(m, NULL);
  CHECK_EQ_STR(text, "# HELP q Queue.\n# TYPE q gauge\nq{endpoint=\"e\"} 2\n"
                     "# HELP k_total \n# TYPE k_total counter\nk_total 3\n");
  free(text);
  dyn_metrics_free(m);
  dyn_metrics_t *d = dyn_metrics_default();
  CHECK(d != NULL && d == dyn_metrics_default());
  dyn_metrics_free(d); /* a fresh one next time */
  CHECK(dyn_metrics_default() != NULL);
  dyn_metrics_free(dyn_metrics_default());
}

int main(void) {
  test_set_share_default();
  test_render();
  test_unlabelled_histogram();
  test_rejects();
  TEST_END();
}
