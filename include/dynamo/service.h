/* dynamo/service.h - services written in C.
 *
 * The same concepts as the Python SDK: a service has a name, a namespace,
 * endpoints with handlers, dependencies on other services, start and
 * shutdown hooks, and a config section. A shared object exports the array
 * `dyn_services` (NULL-terminated) of its services, and `dynamo serve
 * lib.so:Entry` runs the graph reachable from Entry, one process per worker:
 *
 *   static const dyn_endpoint_def_t backend_eps[] = {{"generate", generate}, {0}};
 *   static const char *const middle_deps[] = {"Backend", NULL};
 *   static const dyn_service_def_t backend = {
 *     .name = "Backend", .namespace_ = "hello", .workers = 1,
 *     .endpoints = backend_eps };
 *   const dyn_service_def_t *const dyn_services[] = {&backend, &middle, NULL};
 *
 * Payloads are JSON, as the Python SDK sends, so C and Python services call
 * each other. Handlers run on the worker's loop and must not block it; use
 * dyn_runtime_queue_work() for blocking work.
 */
#ifndef DYNAMO_SERVICE_H
#define DYNAMO_SERVICE_H

#include "dynamo/export.h"

#include "dynamo/client.h"
#include "dynamo/runtime.h"
#include "dynamo/server.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DYN_SERVICE_ABI 1

typedef struct dyn_service_ctx dyn_service_ctx_t;

/* A handler gets the service context as its user data. */
typedef struct dyn_endpoint_def {
  const char *name; /* NULL ends the array */
  dyn_handler_fn handler;
} dyn_endpoint_def_t;

typedef struct dyn_service_def {
  int abi;                /* DYN_SERVICE_ABI, or 0 for the current one */
  const char *name;       /* the component name, e.g. "Backend" */
  const char *namespace_; /* default "dynamo" */
  int workers;            /* default 1 */
  int gpu;                /* GPUs per worker */
  const char *cpu;        /* e.g. "1"; informational, for deployment */
  const char *memory;     /* e.g. "1Gi" */
  /* Non-zero: the service serves HTTP (with dynamo/http.h, from on_start)
   * on its config's "port", else this one; `dynamo serve` prints it. */
  int http_port;
  const dyn_endpoint_def_t *endpoints;
  const char *const *depends; /* service names, NULL-terminated; may be NULL */
  /* Called after the runtime and dependency clients exist, before the
   * endpoints are served; non-zero aborts the worker. */
  int (*on_start)(dyn_service_ctx_t *ctx);
  /* Called on SIGTERM/SIGINT after in-flight requests drained. */
  void (*on_shutdown)(dyn_service_ctx_t *ctx);
} dyn_service_def_t;

/* What a running C service reaches through its context. */
DYN_EXTERN dyn_runtime_t *dyn_service_runtime(dyn_service_ctx_t *ctx);
DYN_EXTERN const dyn_service_def_t *dyn_service_def(dyn_service_ctx_t *ctx);
DYN_EXTERN int dyn_service_worker_index(dyn_service_ctx_t *ctx);
/* A config value of this service's section as compact JSON (a string value
 * comes quoted), or NULL when absent. Valid until the worker exits. */
DYN_EXTERN const char *dyn_service_config_json(dyn_service_ctx_t *ctx, const char *key);
/* A string config value, or dflt when absent or not a string. */
DYN_EXTERN const char *dyn_service_config_string(dyn_service_ctx_t *ctx, const char *key, const char *dflt);
DYN_EXTERN long long dyn_service_config_int(dyn_service_ctx_t *ctx, const char *key, long long dflt);
/* The client of a dependency's endpoint (the dependency must be listed in
 * depends). Requests wait for a first instance (the dependency may start
 * later). */
DYN_EXTERN dyn_client_t *dyn_service_client(dyn_service_ctx_t *ctx, const char *service,
                                 const char *endpoint);
/* Whether a dependency is live in the graph being served: listed in
 * depends and not pruned by the graph's link() calls (a Python graph may
 * link a C service to a subset of its depends). */
DYN_EXTERN int dyn_service_has_dependency(dyn_service_ctx_t *ctx, const char *service);
DYN_EXTERN void dyn_service_set_data(dyn_service_ctx_t *ctx, void *data);
DYN_EXTERN void *dyn_service_data(dyn_service_ctx_t *ctx);

/* ---- hosting C services: what `dynamo serve` and `dynamo worker` do ---- */

/* What a shared object of services exports. Declared here so that the
 * definition is exported even when the object is built with hidden
 * visibility. */
DYN_EXTERN extern const dyn_service_def_t *const dyn_services[];

/* Loads so_path (a path without a slash is taken from the working
 * directory) and its `dyn_services` table, checking each service's ABI.
 * Errors (DYN_ENOTFOUND, DYN_EINVAL) are explained on stderr. */
DYN_EXTERN int dyn_service_load(const char *so_path, const dyn_service_def_t *const **out);
/* The service's namespace: namespace_, or "dynamo" when unset. */
DYN_EXTERN const char *dyn_service_namespace(const dyn_service_def_t *def);
/* The service named name (or "namespace/name") in a table, or NULL. */
DYN_EXTERN const dyn_service_def_t *dyn_service_find(const dyn_service_def_t *const *defs,
                                          const char *name);
/* Runs one worker of service from target ("path/lib.so:Entry") until
 * SIGTERM or SIGINT: joins the runtime from the environment `dynamo serve`
 * sets, builds the dependencies' clients, runs on_start, serves the
 * endpoints, then drains and runs on_shutdown. Returns the exit status. */
DYN_EXTERN int dyn_service_worker_run(const char *target, const char *service);

#ifdef __cplusplus
}
#endif
#endif
