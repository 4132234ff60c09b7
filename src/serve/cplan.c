/* cplan.c - the plan of a graph of C services, for `dynamo serve` and
 * `dynamo build`.
 *
 * A shared object's `dyn_services` table (loaded with dyn_service_load)
 * gives each service's endpoints, dependencies and resources; this turns
 * the graph reachable from the entry service into the same plan JSON that
 * `python -m dynamo.sdk.plan` prints for a Python graph (serve/plan.h).
 */
#include "serve/cplan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env_names.h"
#include "dynamo/service.h"
#include "dynamo/status.h"

#define MAX_SERVICES 64

int dyn__is_c_target(const char *target) {
  const char *colon = strrchr(target, ':');
  if (!colon || colon - target < 3) return 0;
  return !strncmp(colon - 3, ".so", 3);
}

static void list_names(const dyn_service_def_t *const *defs, char *buf, size_t cap) {
  buf[0] = 0;
  for (size_t i = 0; defs[i]; i++) {
    size_t n = strlen(buf);
    snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", defs[i]->name);
  }
}

/* Depth-first, dependencies first; detects cycles. */
static int visit(const dyn_service_def_t *const *defs, const dyn_service_def_t *d,
                 const dyn_service_def_t **order, size_t *n, int *state, json_t *edges) {
  size_t idx = 0;
  while (defs[idx] != d) idx++;
  if (state[idx] == 2) return DYN_OK;
  if (state[idx] == 1) {
    fprintf(stderr, "error: dependency cycle through %s\n", d->name);
    return DYN_EINVAL;
  }
  state[idx] = 1;
  for (size_t i = 0; d->depends && d->depends[i]; i++) {
    const dyn_service_def_t *dep = dyn_service_find(defs, d->depends[i]);
    json_array_append_new(edges, json_pack("[ss]", d->name, d->depends[i]));
    if (!dep) continue; /* a service of another language, served elsewhere */
    int rc = visit(defs, dep, order, n, state, edges);
    if (rc) return rc;
  }
  state[idx] = 2;
  order[(*n)++] = d;
  return DYN_OK;
}

static json_t *service_args(json_t *config, const char *name, const char *key) {
  return json_object_get(json_object_get(json_object_get(config, name), "ServiceArgs"), key);
}

int dyn__c_plan(const char *so_path, const char *svc, json_t *config, json_t **plan_out) {
  const dyn_service_def_t *const *defs;
  int rc = dyn_service_load(so_path, &defs);
  if (rc) return rc;
  size_t count = 0;
  while (defs[count]) count++;
  if (count > MAX_SERVICES) return DYN_EINVAL;
  const dyn_service_def_t *entry = dyn_service_find(defs, svc);
  if (!entry) {
    char names[1024];
    list_names(defs, names, sizeof names);
    fprintf(stderr, "error: %s has no service %s (services: %s)\n", so_path, svc, names);
    return DYN_ENOTFOUND;
  }
  const dyn_service_def_t *order[MAX_SERVICES];
  int state[MAX_SERVICES] = {0};
  size_t n = 0;
  json_t *edges = json_array();
  rc = visit(defs, entry, order, &n, state, edges);
  if (rc) {
    json_decref(edges);
    return rc;
  }
  const char *key;
  json_t *section;
  json_object_foreach(config, key, section) {
    int known = !strcmp(key, "Common");
    for (size_t i = 0; i < n && !known; i++) known = !strcmp(order[i]->name, key);
    if (!known) {
      const char *src = getenv(DYN_ENV_CONFIG_FILE);
      fprintf(stderr, "error: %s: service '%s' is not in the graph of %s\n",
              src && *src ? src : "configuration", key, entry->name);
      json_decref(edges);
      return DYN_EINVAL;
    }
  }
  json_t *services = json_array();
  for (size_t i = 0; i < n; i++) {
    const dyn_service_def_t *d = order[i];
    json_t *eps = json_array(), *deps = json_array();
    for (const dyn_endpoint_def_t *e = d->endpoints; e && e->name; e++)
      json_array_append_new(eps, json_string(e->name));
    for (size_t k = 0; d->depends && d->depends[k]; k++)
      json_array_append_new(deps, json_string(d->depends[k]));
    json_t *workers = service_args(config, d->name, "workers");
    json_t *res = json_pack("{s:i}", "gpu", d->gpu);
    if (d->cpu) json_object_set_new(res, "cpu", json_string(d->cpu));
    if (d->memory) json_object_set_new(res, "memory", json_string(d->memory));
    json_t *res_over = service_args(config, d->name, "resources");
    if (json_is_object(res_over)) json_object_update(res, res_over);
    json_t *http = json_null();
    if (d->http_port) {
      json_t *port = json_object_get(json_object_get(config, d->name), "port");
      http = json_pack("{s:s, s:I}", "host", "0.0.0.0", "port",
                       (json_int_t)(json_is_integer(port) ? json_integer_value(port) : d->http_port));
    }
    json_t *envs = service_args(config, d->name, "envs");
    envs = json_is_array(envs) ? json_incref(envs) : json_array();
    json_array_append_new(services, json_pack(
        "{s:s, s:s, s:I, s:o, s:o, s:o, s:o, s:o}", "name", d->name, "namespace", dyn_service_namespace(d),
        "workers", (json_int_t)(json_is_integer(workers) ? json_integer_value(workers)
                                                        : (d->workers > 0 ? d->workers : 1)),
        "resources", res, "envs", envs, "endpoints", eps, "http", http, "dependencies", deps));
  }
  char target[4200];
  snprintf(target, sizeof target, "%s:%s", so_path, svc);
  *plan_out = json_pack("{s:s, s:s, s:s, s:o, s:o, s:O}", "target", target, "entry",
                        entry->name, "kind", "c", "services", services, "edges", edges,
                        "config", config);
  return *plan_out ? DYN_OK : DYN_ENOMEM;
}
