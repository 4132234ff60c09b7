/* test_metrics.c - the Prometheus registry (src/llm/services/metrics.c): exact
 * exposition text for counters, gauges and histograms (HELP/TYPE, label
 * escaping, cumulative buckets, +Inf == _count, _sum), series reuse, and
 * rejection of bad names and bounds. */
#include "harness.h"
#include "llm/services/metrics.h"

static void test_render(void) {
  dyn__metrics_t *m = dyn__metrics_new();
  REQUIRE(m);
  static const char *const labels[] = {"model", "status", NULL};
  dyn__metric_t *c, *g, *h;
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_COUNTER, "x_total", "Things\ncounted.", labels,
                                NULL, 0, &c), DYN_OK);
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_GAUGE, "x_inflight", "Now.", NULL, NULL, 0, &g),
               DYN_OK);
  static const double b[] = {0.1, 1, 2.5};
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_HISTOGRAM, "x_seconds", "Time.", labels + 1, b, 3,
                                &h), DYN_OK);
  const char *v1[] = {"m\"1\\", "ok"};
  dyn__series_t *s1 = dyn__metric_series(c, v1);
  CHECK(s1 == dyn__metric_series(c, v1)); /* the same series again */
  dyn__series_add(s1, 2);
  dyn__series_add(s1, -5); /* a counter never goes down */
  const char *v2[] = {"m", "error"};
  dyn__series_add(dyn__metric_series(c, v2), 1);
  dyn__series_t *gs = dyn__metric_series(g, NULL);
  dyn__series_add(gs, 3);
  dyn__series_add(gs, -1);
  const char *hv[] = {"a"};
  dyn__series_t *hs = dyn__metric_series(h, hv);
  dyn__series_observe(hs, 0.05);
  dyn__series_observe(hs, 0.1); /* le is inclusive */
  dyn__series_observe(hs, 2);
  dyn__series_observe(hs, 100);
  size_t len;
  char *text = dyn__metrics_render(m, &len);
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
  dyn__metrics_free(m);
}

static void test_unlabelled_histogram(void) {
  dyn__metrics_t *m = dyn__metrics_new();
  dyn__metric_t *h;
  static const double b[] = {1};
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_HISTOGRAM, "h", "", NULL, b, 1, &h), DYN_OK);
  dyn__series_observe(dyn__metric_series(h, NULL), 0.5);
  char *text = dyn__metrics_render(m, NULL);
  CHECK(text && strstr(text, "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n"));
  free(text);
  dyn__metrics_free(m);
}

static void test_rejects(void) {
  dyn__metrics_t *m = dyn__metrics_new();
  dyn__metric_t *f;
  static const double up[] = {1, 2}, down[] = {2, 1};
  static const char *const bad_label[] = {"le", NULL};
  static const char *const colon_label[] = {"a:b", NULL};
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_COUNTER, "1abc", "", NULL, NULL, 0, &f), DYN_EINVAL);
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_COUNTER, "a-b", "", NULL, NULL, 0, &f), DYN_EINVAL);
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_HISTOGRAM, "h", "", NULL, down, 2, &f), DYN_EINVAL);
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_HISTOGRAM, "h", "", NULL, up, 0, &f), DYN_EINVAL);
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_HISTOGRAM, "h", "", bad_label, up, 2, &f),
               DYN_EINVAL);
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_GAUGE, "g", "", colon_label, NULL, 0, &f),
               DYN_EINVAL);
  CHECK_STATUS(dyn__metrics_add(m, DYN__METRIC_GAUGE, "ns:g", "", NULL, NULL, 0, &f), DYN_OK);
  char *text = dyn__metrics_render(m, NULL);
  CHECK(text && !strcmp(text, "# HELP ns:g \n# TYPE ns:g gauge\n"));
  free(text);
  dyn__metrics_free(m);
}

int main(void) {
  test_render();
  test_unlabelled_histogram();
  test_rejects();
  TEST_END();
}
