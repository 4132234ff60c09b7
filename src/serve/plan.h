/* plan.h - what to run: the resolved graph of a `dynamo serve` target.
 *
 * The supervisor does not read Python. It asks the resolver (`python -m
 * dynamo.sdk.plan TARGET`, or dyn__c_plan for a C graph) for a plan: one
 * JSON document listing the services of the graph, their worker counts,
 * resources, environment and HTTP routes. This file turns that document into
 * checked C structs, so that a malformed plan is one clear error here
 * rather than a crash later.
 */
#ifndef DYN__SERVE_PLAN_H
#define DYN__SERVE_PLAN_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

typedef struct dyn__service {
  const char *name;      /* borrowed from the plan's JSON */
  const char *ns;        /* namespace, or "" */
  int workers;           /* >= 1 */
  int gpus;              /* per worker, >= 0 */
  char **envs;           /* "NAME=value", NULL-terminated */
  const char *http_host; /* NULL when the service has no HTTP */
  int http_port;
  const char *c_target;  /* "lib.so:Name" for a C service in a Python graph */
  json_t *json;          /* the service's object in the plan */
} dyn__service_t;

typedef struct dyn__plan {
  json_t *json; /* the whole document */
  const char *target;
  const char *entry; /* or "" */
  int is_c;          /* workers are `dynamo worker`, not Python */
  dyn__service_t *services;
  size_t nservices;
} dyn__plan_t;

/* Splits TARGET at its last ':' into a graph (file or module) and a service
 * name, both non-empty; *is_c when the graph is a shared library. */
int dyn__target_parse(const char *target, char **graph, char **service, int *is_c, char *err,
                      size_t errlen);

/* The Python that runs the resolver and Python workers: $DYN_PYTHON, else
 * python3 from PATH. */
const char *dyn__python(void);

/* How long a Python resolver may take when the caller gives no limit. */
#define DYN__GRAPH_TIMEOUT_S 60

/* A number of seconds for a graph's loading (> 0, at most a day), from
 * --graph-timeout or $DYN_GRAPH_TIMEOUT; DYN_EINVAL when text is not one. */
int dyn__graph_timeout_parse(const char *text, double *seconds);

/* Resolves target with config. A Python resolver's stderr (a traceback
 * says more than we could) is copied to our stderr, whether or not it
 * succeeded. A Python graph must load within timeout_s seconds (0:
 * $DYN_GRAPH_TIMEOUT, else DYN__GRAPH_TIMEOUT_S): one that blocks while
 * importing is stopped and is an error, and one that is slow is announced
 * on stderr after a few seconds. */
int dyn__plan_resolve(uv_loop_t *loop, const char *target, json_t *config,
                      const char *config_file, double timeout_s, dyn__plan_t *out, char *err,
                      size_t errlen);

/* Checks a plan document and fills out (which then owns a reference to doc). */
int dyn__plan_from_json(json_t *doc, dyn__plan_t *out, char *err, size_t errlen);
void dyn__plan_free(dyn__plan_t *p);

const dyn__service_t *dyn__plan_find(const dyn__plan_t *p, const char *name);

#endif
