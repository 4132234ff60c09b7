/* metrics.c - the Prometheus registry behind /metrics (dynamo/metrics.h).
 *
 * A series is keyed by its rendered label set ({a="x",b="y"}, values
 * escaped), so rendering copies it as is and a lookup is one format and a
 * string compare over the family's few series. Histograms keep per-bucket
 * counts and make them cumulative only when rendered.
 */
#include "dynamo/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"
#include "common/buf.h"

struct dyn_series {
  dyn_series_t *next;
  const struct dyn_metric *family;
  char *labels; /* "" or {a="x",...} */
  double value; /* counter, gauge; histogram: the sum */
  unsigned long long count;
  unsigned long long buckets[DYN_METRIC_MAX_BUCKETS + 1]; /* last: +Inf */
};

struct dyn_metric {
  dyn_metric_t *next;
  dyn_metric_type_t type;
  char *name, *help;
  char *labels[DYN_METRIC_MAX_LABELS];
  size_t n_labels;
  double bounds[DYN_METRIC_MAX_BUCKETS];
  size_t n_bounds;
  dyn_series_t *series, **tail;
};

struct dyn_metrics {
  dyn_metric_t *first, **tail;
};

dyn_metrics_t *dyn_metrics_new(void) {
  dyn_metrics_t *m = calloc(1, sizeof *m);
  if (m) m->tail = &m->first;
  return m;
}

static void free_family(dyn_metric_t *f) {
  while (f->series) {
    dyn_series_t *s = f->series;
    f->series = s->next;
    free(s->labels);
    free(s);
  }
  for (size_t i = 0; i < f->n_labels; i++) free(f->labels[i]);
  free(f->name);
  free(f->help);
  free(f);
}

/* One per process, like Prometheus clients' default registry: the worker
 * host serves it, and every part of the process registers into it. */
static dyn_metrics_t *g_default;

dyn_metrics_t *dyn_metrics_default(void) {
  if (!g_default) g_default = dyn_metrics_new();
  return g_default;
}

void dyn_metrics_free(dyn_metrics_t *m) {
  if (!m) return;
  while (m->first) {
    dyn_metric_t *f = m->first;
    m->first = f->next;
    free_family(f);
  }
  if (m == g_default) g_default = NULL;
  free(m);
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* (label names: no ':'). */
static int valid_name(const char *s, int colon) {
  if (!s || !*s || (*s >= '0' && *s <= '9')) return 0;
  for (; *s; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || (colon && c == ':')))
      return 0;
  }
  return 1;
}

int dyn_metrics_add(dyn_metrics_t *m, dyn_metric_type_t type, const char *name,
                     const char *help, const char *const *labels, const double *bounds,
                     size_t n_bounds, dyn_metric_t **out) {
  if (!valid_name(name, 1) || n_bounds > DYN_METRIC_MAX_BUCKETS ||
      (type == DYN_METRIC_HISTOGRAM && !n_bounds))
    return DYN_EINVAL;
  for (size_t i = 1; i < n_bounds; i++)
    if (!(bounds[i] > bounds[i - 1])) return DYN_EINVAL;
  size_t nl = 0;
  while (labels && labels[nl]) {
    if (nl == DYN_METRIC_MAX_LABELS || !valid_name(labels[nl], 0) || !strcmp(labels[nl], "le"))
      return DYN_EINVAL;
    nl++;
  }
  for (dyn_metric_t *f = m->first; f; f = f->next) {
    if (strcmp(f->name, name)) continue;
    int same = f->type == type && f->n_labels == nl;
    for (size_t i = 0; same && i < nl; i++) same = !strcmp(f->labels[i], labels[i]);
    if (!same) return DYN_EEXIST;
    if (out) *out = f;
    return DYN_OK;
  }
  dyn_metric_t *f = calloc(1, sizeof *f);
  if (!f) return DYN_ENOMEM;
  f->type = type;
  f->tail = &f->series;
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  int oom = !f->name || !f->help;
  for (size_t i = 0; i < nl; i++) oom |= !(f->labels[f->n_labels++] = strdup(labels[i]));
  if (oom) {
    free_family(f);
    return DYN_ENOMEM;
  }
  if (n_bounds) memcpy(f->bounds, bounds, n_bounds * sizeof *bounds);
  f->n_bounds = n_bounds;
  *m->tail = f;
  m->tail = &f->next;
  if (out) *out = f;
  return DYN_OK;
}

/* Label values escape \, " and newline, as the text format requires. */
static int append_escaped(dyn__buf_t *b, const char *v) {
  for (; *v; v++) {
    const char *e = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
    if (dyn__buf_append(b, e ? e : v, e ? 2 : 1)) return DYN_ENOMEM;
  }
  return DYN_OK;
}

static int format_labels(const dyn_metric_t *f, const char *const *values, dyn__buf_t *b) {
  int rc = DYN_OK;
  for (size_t i = 0; i < f->n_labels && !rc; i++) {
    rc = dyn__buf_append(b, i ? "," : "{", 1);
    if (!rc) rc = dyn__buf_append(b, f->labels[i], strlen(f->labels[i]));
    if (!rc) rc = dyn__buf_append(b, "=\"", 2);
    if (!rc) rc = append_escaped(b, values && values[i] ? values[i] : "");
    if (!rc) rc = dyn__buf_append(b, "\"", 1);
  }
  if (!rc && f->n_labels) rc = dyn__buf_append(b, "}", 1);
  if (!rc) rc = dyn__buf_append(b, "", 1); /* the NUL */
  return rc;
}

dyn_series_t *dyn_metric_series(dyn_metric_t *f, const char *const *values) {
  dyn__buf_t key;
  dyn__buf_init(&key);
  if (format_labels(f, values, &key)) {
    dyn__buf_free(&key);
    return NULL;
  }
  for (dyn_series_t *s = f->series; s; s = s->next) {
    if (!strcmp(s->labels, (const char *)key.data)) {
      dyn__buf_free(&key);
      return s;
    }
  }
  dyn_series_t *s = calloc(1, sizeof *s);
  if (!s) {
    dyn__buf_free(&key);
    return NULL;
  }
  s->labels = (char *)key.data; /* the buffer becomes the key */
  s->family = f;
  *f->tail = s;
  f->tail = &s->next;
  return s;
}

void dyn_series_add(dyn_series_t *s, double v) {
  if (s->family->type == DYN_METRIC_COUNTER && !(v >= 0)) return;
  s->value += v;
}

void dyn_series_set(dyn_series_t *s, double v) {
  if (s->family->type == DYN_METRIC_GAUGE) s->value = v;
}

void dyn_series_observe(dyn_series_t *s, double v) {
  const dyn_metric_t *f = s->family;
  size_t i = 0;
  while (i < f->n_bounds && !(v <= f->bounds[i])) i++;
  s->buckets[i]++;
  s->count++;
  s->value += v;
}

/* Shortest of %.15g / %.17g that reads back as v. */
static void fmt_double(char *out, size_t cap, double v) {
  if (isinf(v)) {
    snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  snprintf(out, cap, "%.15g", v);
  if (strtod(out, NULL) != v) snprintf(out, cap, "%.17g", v);
}

static int put(dyn__buf_t *b, const char *s) { return dyn__buf_append(b, s, strlen(s)); }

/* name{labels} value, with an extra label (le) spliced in when given. */
static int sample(dyn__buf_t *b, const char *name, const char *suffix, const char *labels,
                  const char *le, double v) {
  char num[40];
  fmt_double(num, sizeof num, v);
  int rc = put(b, name);
  if (!rc) rc = put(b, suffix);
  if (!rc && le) {
    size_t n = strlen(labels);
    /* {a="x"} -> {a="x",le="..."}; "" -> {le="..."} */
    rc = n ? dyn__buf_append(b, labels, n - 1) : put(b, "{");
    if (!rc) rc = put(b, n ? ",le=\"" : "le=\"");
    if (!rc) rc = put(b, le);
    if (!rc) rc = put(b, "\"}");
  } else if (!rc) {
    rc = put(b, labels);
  }
  if (!rc) rc = put(b, " ");
  if (!rc) rc = put(b, num);
  if (!rc) rc = put(b, "\n");
  return rc;
}

static int render_histogram(dyn__buf_t *b, const dyn_metric_t *f, const dyn_series_t *s) {
  unsigned long long cum = 0;
  char le[40];
  int rc = DYN_OK;
  for (size_t i = 0; i <= f->n_bounds && !rc; i++) {
    cum += s->buckets[i];
    fmt_double(le, sizeof le, i < f->n_bounds ? f->bounds[i] : INFINITY);
    rc = sample(b, f->name, "_bucket", s->labels, le, (double)cum);
  }
  if (!rc) rc = sample(b, f->name, "_sum", s->labels, NULL, s->value);
  if (!rc) rc = sample(b, f->name, "_count", s->labels, NULL, (double)s->count);
  return rc;
}

static int render_family(dyn__buf_t *b, const dyn_metric_t *f) {
  static const char *const types[] = {"counter", "gauge", "histogram"};
  int rc = put(b, "# HELP ");
  if (!rc) rc = put(b, f->name);
  if (!rc) rc = put(b, " ");
  /* HELP escapes backslash and newline. */
  for (const char *h = f->help; *h && !rc; h++)
    rc = *h == '\\' ? put(b, "\\\\") : *h == '\n' ? put(b, "\\n") : dyn__buf_append(b, h, 1);
  if (!rc) rc = put(b, "\n# TYPE ");
  if (!rc) rc = put(b, f->name);
  if (!rc) rc = put(b, " ");
  if (!rc) rc = put(b, types[f->type]);
  if (!rc) rc = put(b, "\n");
  for (const dyn_series_t *s = f->series; s && !rc; s = s->next)
    rc = f->type == DYN_METRIC_HISTOGRAM ? render_histogram(b, f, s)
                                          : sample(b, f->name, "", s->labels, NULL, s->value);
  return rc;
}

char *dyn_metrics_render(const dyn_metrics_t *m, size_t *len) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  int rc = DYN_OK;
  for (const dyn_metric_t *f = m->first; f && !rc; f = f->next) rc = render_family(&b, f);
  if (!rc) rc = dyn__buf_append(&b, "", 1);
  if (rc) {
    dyn__buf_free(&b);
    return NULL;
  }
  if (len) *len = b.len - 1;
  return (char *)b.data;
}
