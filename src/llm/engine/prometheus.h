/* prometheus.h - an engine's load and counters as Prometheus metrics in the
 * process's registry (dynamo/metrics.h), which the worker's health port
 * serves on /metrics (prometheus.c). */
#ifndef DYN__LLM_ENGINE_PROMETHEUS_H
#define DYN__LLM_ENGINE_PROMETHEUS_H
#include "dynamo/llm/engine.h"
#include "dynamo/metrics.h"

typedef struct dyn__engine_prom {
  dyn_series_t *running, *waiting, *blocks_used, *blocks_cached, *blocks_total;
  dyn_series_t *requests, *prompt_tokens, *cached_tokens, *generated_tokens, *preemptions,
      *evictions, *steps;
  dyn_series_t *step_seconds; /* histogram */
  dyn_engine_metrics_t last; /* the counters already added */
} dyn__engine_prom_t;

/* Registers the families (once per process) and this worker's series,
 * labelled namespace, component and instance (hex). DYN_ENOMEM, or
 * DYN_EEXIST if another part of the process took one of the names. */
int dyn__engine_prom_init(dyn__engine_prom_t *p, const char *ns, const char *component,
                          const char *instance);
/* A dyn_engine_step_fn: one step's duration into the histogram (ud: the
 * dyn__engine_prom_t). */
void dyn__engine_prom_step(double seconds, void *ud);
/* Sets the gauges and adds to the counters what m gained since the last
 * update. */
void dyn__engine_prom_update(dyn__engine_prom_t *p, const dyn_engine_metrics_t *m);
#endif
