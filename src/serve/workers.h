/* workers.h - turning a resolved plan into the processes that serve it.
 *
 * A service with workers: 3 is three processes, each with its label
 * ("Backend.0"), its command line (a Python worker, or `dynamo worker` for a
 * C service), its GPUs and its health port. Everything here is decided
 * before anything starts, so that --dry-run can show it and a shortage of
 * GPUs is an error message rather than a half-started graph.
 */
#ifndef DYN__SERVE_WORKERS_H
#define DYN__SERVE_WORKERS_H

#include <stddef.h>

#include "serve/gpu.h"
#include "serve/plan.h"

typedef struct dyn__worker {
  const dyn__service_t *svc; /* borrowed from the plan */
  int index;                 /* within its service, from 0 (DYN_WORKER_INDEX) */
  char label[256];           /* "Service.index" */
  char **argv;               /* NULL-terminated */
  char *cuda;                /* CUDA_VISIBLE_DEVICES, or NULL: leave it alone */
  int health_port;           /* DYN_HEALTH_PORT, or 0 */
} dyn__worker_t;

typedef struct dyn__workers {
  dyn__worker_t *w; /* the plan's services in order, each one's workers in order */
  size_t n;
  size_t nservices; /* how many services they serve */
} dyn__workers_t;

typedef struct dyn__workers_options {
  const char *target; /* what Python workers import, and C workers load */
  const char *only;   /* serve this service alone (--service-name); NULL: all */
  const char *python; /* runs Python workers (dyn__python()) */
  const char *self;   /* the dynamo executable, which runs C workers */
  /* The GPUs to deal out, or NULL to leave CUDA_VISIBLE_DEVICES alone. */
  const dyn__gpus_t *gpus;
  int oversubscribe; /* deal them out again when the graph asks for more */
  int health_base;   /* worker k (counted over the served workers) gets
                        health_base + k; 0: no health ports */
} dyn__workers_options_t;

/* True when o serves s. */
int dyn__workers_serves(const dyn__workers_options_t *o, const dyn__service_t *s);

/* Fills out with one worker per worker of every served service. Fails
 * (DYN_EINVAL) when o->only names no service of the plan or the graph asks
 * for more GPUs than there are, with the reason in err. */
int dyn__workers_plan(const dyn__plan_t *plan, const dyn__workers_options_t *o,
                      dyn__workers_t *out, char *err, size_t errlen);
void dyn__workers_free(dyn__workers_t *ws);

#endif
