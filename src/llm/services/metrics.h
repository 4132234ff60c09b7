/* metrics.h - a small Prometheus registry for the LLM services.
 *
 * Counters, gauges and histograms, each a family with fixed label names
 * and one series per label-value tuple, rendered in the text exposition
 * format 0.0.4 (HELP and TYPE lines, cumulative buckets, _sum, _count).
 * Services look a series up once (per request or at start) and then update
 * it with a plain add: everything runs on one loop, so nothing is locked.
 */
#ifndef DYN__LLM_METRICS_H
#define DYN__LLM_METRICS_H

#include <stddef.h>

typedef struct dyn__metrics dyn__metrics_t;
typedef struct dyn__metric dyn__metric_t;
typedef struct dyn__series dyn__series_t;

typedef enum dyn__metric_type {
  DYN__METRIC_COUNTER,
  DYN__METRIC_GAUGE,
  DYN__METRIC_HISTOGRAM
} dyn__metric_type_t;

#define DYN__METRIC_MAX_LABELS 6
#define DYN__METRIC_MAX_BUCKETS 24

dyn__metrics_t *dyn__metrics_new(void);
void dyn__metrics_free(dyn__metrics_t *m);

/* Adds a family. labels: NULL-terminated names (may be NULL: none). For a
 * histogram, bounds are the buckets' upper bounds, increasing (+Inf is
 * implied). DYN_EINVAL for a bad name, too many labels or buckets. */
int dyn__metrics_add(dyn__metrics_t *m, dyn__metric_type_t type, const char *name,
                     const char *help, const char *const *labels, const double *bounds,
                     size_t n_bounds, dyn__metric_t **out);

/* The series for these label values (as many as the family has names),
 * created at zero on first use; NULL on ENOMEM. */
dyn__series_t *dyn__metric_series(dyn__metric_t *f, const char *const *values);

/* Counter and gauge: adds v (a counter only grows: v < 0 is ignored). */
void dyn__series_add(dyn__series_t *s, double v);
/* Histogram: one observation. */
void dyn__series_observe(dyn__series_t *s, double v);

/* The exposition text, malloc'd, NUL-terminated; NULL on ENOMEM. */
char *dyn__metrics_render(const dyn__metrics_t *m, size_t *len);

#endif
