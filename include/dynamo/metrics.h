/* dynamo/metrics.h - Prometheus metrics: a registry of counters, gauges
 * and histograms, rendered in the text exposition format 0.0.4.
 *
 * Each metric is a family with fixed label names and one series per
 * label-value tuple (HELP and TYPE lines, cumulative buckets, _sum,
 * _count). Code looks a series up once (per request or at start) and then
 * updates it with a plain add: a registry belongs to one loop thread, so
 * nothing is locked.
 *
 * dyn_metrics_default() is the process's registry: what a worker's health
 * port serves on GET /metrics (next to /live and /health). Follow
 * Prometheus' conventions: a "dynamo_" prefix, base units (seconds,
 * bytes), "_total" on counters.
 */
#ifndef DYNAMO_METRICS_H
#define DYNAMO_METRICS_H

#include "dynamo/export.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_metrics dyn_metrics_t;
typedef struct dyn_metric dyn_metric_t;
typedef struct dyn_series dyn_series_t;

typedef enum dyn_metric_type {
  DYN_METRIC_COUNTER,
  DYN_METRIC_GAUGE,
  DYN_METRIC_HISTOGRAM
} dyn_metric_type_t;

#define DYN_METRIC_MAX_LABELS 6
#define DYN_METRIC_MAX_BUCKETS 24

DYN_EXTERN dyn_metrics_t *dyn_metrics_new(void);
DYN_EXTERN void dyn_metrics_free(dyn_metrics_t *m);

/* Adds a family. labels: NULL-terminated names (may be NULL: none). For a
 * histogram, bounds are the buckets' upper bounds, increasing (+Inf is
 * implied). DYN_EINVAL for a bad name, too many labels or buckets. A name
 * already registered gives that family when its type and label names are
 * the same (so independent parts of a process can share one), and
 * DYN_EEXIST when they are not. */
DYN_EXTERN int dyn_metrics_add(dyn_metrics_t *m, dyn_metric_type_t type, const char *name,
                     const char *help, const char *const *labels, const double *bounds,
                     size_t n_bounds, dyn_metric_t **out);

/* The series for these label values (as many as the family has names),
 * created at zero on first use; NULL on ENOMEM. */
DYN_EXTERN dyn_series_t *dyn_metric_series(dyn_metric_t *f, const char *const *values);

/* Counter and gauge: adds v (a counter only grows: v < 0 is ignored). */
DYN_EXTERN void dyn_series_add(dyn_series_t *s, double v);
/* Gauge: sets the value (ignored for other types). */
DYN_EXTERN void dyn_series_set(dyn_series_t *s, double v);
/* Histogram: one observation. */
DYN_EXTERN void dyn_series_observe(dyn_series_t *s, double v);

/* The process's registry, made on first use; NULL on ENOMEM. */
DYN_EXTERN dyn_metrics_t *dyn_metrics_default(void);

/* The exposition text, malloc'd, NUL-terminated; NULL on ENOMEM. */
DYN_EXTERN char *dyn_metrics_render(const dyn_metrics_t *m, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
