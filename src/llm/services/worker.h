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

/* disagg.c: what a decode worker knows of one prefill worker, from the
 * load_metrics it publishes (at least every second). */
typedef struct dyn__prefill_load {
  uint64_t id;      /* its instance */
  uint64_t load;    /* its last report: running plus waiting sequences, each
                       a prefill request without its first token */
  uint64_t sent;    /* this worker's prefill requests to it since then */
  uint64_t seen_ms; /* when that report came (loop time); 0: none yet */
} dyn__prefill_load_t;

/* The prefill queue a decode worker holds against max-prefill-queue-size:
 * over the live prefill workers (live, n_live), each one's last report
 * plus what this worker sent it since. A dead worker's last report is not
 * counted. */
uint64_t dyn__disagg_queue_length(const dyn__prefill_load_t *loads, size_t n,
                                  const uint64_t *live, size_t n_live);

/* Whether a prompt goes to a prefill worker: a request that generates
 * (max_tokens >= 1) whose uncached part is longer than max_local, while
 * queue is shorter than max_queue and a prefill worker is live. */
int dyn__disagg_goes_remote(uint32_t max_tokens, long long uncached, long long max_local,
                            uint64_t queue, long long max_queue, size_t n_live);

/* disagg.c: its part of a worker's start (after the engine opened) and
 * shutdown, the decode role's generate and the prefill endpoint. */
int dyn__disagg_start(worker_t *w);
void dyn__disagg_shutdown(worker_t *w);
/* Decides where req's prompt is prefilled and answers req. in is the
 * decoded request (the callee frees it). */
void dyn__disagg_generate(worker_t *w, dyn_request_t *req, void *in);
void dyn__disagg_prefill(dyn_request_t *req, const void *body, size_t len, void *ud);
#endif
