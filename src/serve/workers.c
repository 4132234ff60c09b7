/* workers.c - the processes a plan becomes: labels, command lines, GPUs,
 * health ports.
 *
 * Workers are numbered in one sequence over every served service, in the
 * plan's order; the GPUs and the health ports are dealt out along that
 * sequence, so the same plan and options always give the same processes.
 */
#include "serve/workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fail.h"
#include "dynamo/status.h"
#include "serve/env.h"

int dyn__workers_serves(const dyn__workers_options_t *o, const dyn__service_t *s) {
  return !o->only || !strcmp(o->only, s->name);
}

/* The command line of a worker of s: a C service runs in `dynamo worker`,
 * a Python one in the SDK's worker module. */
static char **worker_argv(const dyn__plan_t *plan, const dyn__workers_options_t *o,
                          const dyn__service_t *s) {
  /* A C service inside a Python graph names its own shared object. */
  const char *ctarget = s->c_target ? s->c_target : o->target;
  char *c[] = {(char *)o->self, "worker", (char *)ctarget, "--service", (char *)s->name, NULL};
  char *py[] = {(char *)o->python, "-m", "dynamo.sdk.worker", (char *)o->target, "--service",
                (char *)s->name, NULL};
  return dyn__strv_dup(plan->is_c || s->c_target ? c : py);
}

int dyn__workers_plan(const dyn__plan_t *plan, const dyn__workers_options_t *o,
                      dyn__workers_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (o->only && !dyn__plan_find(plan, o->only))
    return dyn__fail(err, errlen, DYN_EINVAL, "the graph has no service '%s'", o->only);
  size_t total = 0;
  dyn__gpu_demand_t *demand = calloc(plan->nservices, sizeof *demand);
  if (!demand) return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  for (size_t i = 0; i < plan->nservices; i++) {
    const dyn__service_t *s = &plan->services[i];
    if (!dyn__workers_serves(o, s)) continue;
    demand[out->nservices++] = (dyn__gpu_demand_t){s->name, s->workers, s->gpus};
    total += (size_t)s->workers;
  }
  out->w = calloc(total, sizeof *out->w);
  char **cuda = calloc(total, sizeof *cuda);
  int rc = DYN_OK;
  if (!out->w || !cuda) rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  else if (o->gpus)
    rc = dyn__gpu_assign(o->gpus, demand, out->nservices, o->oversubscribe, cuda, err, errlen);
  free(demand);
  size_t k = 0;
  for (size_t i = 0; !rc && i < plan->nservices; i++) {
    const dyn__service_t *s = &plan->services[i];
    if (!dyn__workers_serves(o, s)) continue;
    for (int w = 0; w < s->workers; w++, k++) {
      dyn__worker_t *p = &out->w[k];
      p->svc = s;
      p->index = w;
      p->cuda = cuda[k]; /* owned by the worker from here on */
      cuda[k] = NULL;
      out->n++;
      snprintf(p->label, sizeof p->label, "%s.%d", s->name, w);
      if (o->health_base) p->health_port = o->health_base + (int)k;
      if (!(p->argv = worker_argv(plan, o, s))) {
        rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
        break;
      }
    }
  }
  if (cuda)
    for (size_t j = 0; j < total; j++) free(cuda[j]);
  free(cuda);
  if (rc) dyn__workers_free(out);
  return rc;
}

void dyn__workers_free(dyn__workers_t *ws) {
  for (size_t k = 0; k < ws->n; k++) {
    dyn__strv_free(ws->w[k].argv);
    free(ws->w[k].cuda);
  }
  free(ws->w);
  memset(ws, 0, sizeof *ws);
}
