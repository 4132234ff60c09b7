/* worker.h - what the Worker service (worker.c) shares with its
 * disaggregated-serving half (disagg.c): the worker's state and a way to
 * run a request on its engine, streaming the output to the caller.
 */
#ifndef DYN__LLM_WORKER_H
#define DYN__LLM_WORKER_H
#include <uv.h>

#include "common/buf.h"
#include "dynamo/llm/engine.h"
#include "dynamo/runtime.h"
#include "dynamo/server.h"
#include "dynamo/service.h"
#include "llm/engine/prometheus.h"

typedef enum { DYN__ROLE_AGGREGATED, DYN__ROLE_PREFILL, DYN__ROLE_DECODE } dyn__worker_role_t;

typedef struct dyn__disagg dyn__disagg_t;

typedef struct worker {
  dyn_service_ctx_t *ctx;
  dyn_engine_t *engine;
  dyn_component_t *component;
  char id_hex[17];
  dyn__buf_t events;
  uv_timer_t metrics_timer;
  unsigned metrics_interval_ms;
  int metrics_dirty;
  uint64_t last_metrics_ms;
  dyn__engine_prom_t prom; /* the same numbers on the health port's /metrics */
  dyn__worker_role_t role;
  uint32_t block_size;
  dyn__disagg_t *dg; /* prefill and decode roles */
} worker_t;

/* Runs r on the worker's engine for req, which it then answers: the
 * engine's tokens as dyn__proto_engine_output_t messages, the first with
 * cached_tokens unless sent_first (the caller sent a first message). On
 * failure nothing was sent: the caller answers req (why says what). */
int dyn__worker_submit(worker_t *w, dyn_request_t *req, const dyn_engine_request_t *r,
                       int sent_first, const char **why);

/* threads.c: the engine's threads when the config gives none: the CPUs
 * this process may use (affinity, cgroup v2 quota) divided by the engine
 * workers (Worker and PrefillWorker) on this machine, at least 1. */
uint32_t dyn__worker_default_threads(void);
/* Its parts, for the tests: the whole CPUs a cgroup v2 cpu.max line
 * ("QUOTA PERIOD") allows, at least 1, or 0 for "max" or text that is not
 * one; the engine workers a DYN_LOCAL_WORKERS value (NULL: unset) counts,
 * at least 1. */
unsigned dyn__cpu_max_cpus(const char *text);
unsigned dyn__engine_workers_here(const char *local_workers);

/* disagg.c: its part of a worker's start (after the engine opened) and
 * shutdown, the decode role's generate and the prefill endpoint. */
int dyn__disagg_start(worker_t *w);
void dyn__disagg_shutdown(worker_t *w);
/* Decides where req's prompt is prefilled and answers req. in is the
 * decoded request (the callee frees it). */
void dyn__disagg_generate(worker_t *w, dyn_request_t *req, void *in);
void dyn__disagg_prefill(dyn_request_t *req, const void *body, size_t len, void *ud);
#endif
