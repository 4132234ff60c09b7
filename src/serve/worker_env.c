/* worker_env.c - building a worker's environment from the graph's and its
 * own settings.
 *
 * Built once per worker, before the supervisor starts any (a restart reuses
 * the same block), so the paths in it are resolved against the directory
 * `dynamo serve` was started in.
 */
#include "serve/worker_env.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/env_names.h"
#include "dynamo/status.h"
#include "serve/env.h"

/* The dependencies that survived link(), comma-separated, for the worker
 * (a C service's depends table is the maximal set of edges). The plan's
 * "dependencies" lists only the live ones. */
static char *live_dependencies(const dyn__service_t *svc) {
  size_t cap = 1, i;
  json_t *d, *deps = json_object_get(svc->json, "dependencies");
  json_array_foreach(deps, i, d) cap += strlen(json_string_value(d) ? json_string_value(d) : "") + 1;
  char *out = calloc(1, cap);
  json_array_foreach(deps, i, d) {
    if (!out || !json_string_value(d)) continue;
    if (*out) strcat(out, ",");
    strcat(out, json_string_value(d));
  }
  return out;
}

/* The directory of a FILE.py:Svc or LIB.so:Svc target (absolute), or 0
 * for a module target. */
static int graph_dir(const char *target, char *out, size_t cap) {
  const char *colon = strrchr(target, ':');
  char file[PATH_MAX], real[PATH_MAX];
  if (!colon || (size_t)(colon - target) >= sizeof file) return 0;
  snprintf(file, sizeof file, "%.*s", (int)(colon - target), target);
  size_t n = strlen(file);
  int is_file = (n > 3 && (!strcmp(file + n - 3, ".py") || !strcmp(file + n - 3, ".so")));
  if (!is_file || !realpath(file, real)) return 0;
  char *slash = strrchr(real, '/');
  if (!slash) return 0;
  *slash = '\0';
  snprintf(out, cap, "%s", real[0] ? real : "/");
  return 1;
}

/* DYN_LOCAL_WORKERS: "Service=count" for each service ws serves (its
 * workers come one service after another). */
static char *local_workers(const dyn__workers_t *ws) {
  size_t cap = 1;
  for (size_t k = 0; k < ws->n; k++) cap += strlen(ws->w[k].svc->name) + 16;
  char *out = calloc(1, cap);
  size_t len = 0;
  for (size_t k = 0; out && k < ws->n; k++)
    if (!k || ws->w[k].svc != ws->w[k - 1].svc)
      len += (size_t)snprintf(out + len, cap - len, "%s%s=%d", len ? "," : "",
                              ws->w[k].svc->name, ws->w[k].svc->workers);
  return out;
}

static int set_service_envs(dyn__env_t *e, char **envs) {
  for (char **v = envs; *v; v++) {
    /* dyn__plan_from_json made each "NAME=value" with a non-empty name. */
    char *eq = strchr(*v, '=');
    char *name = strndup(*v, (size_t)(eq - *v));
    int rc = !name ? DYN_ENOMEM : dyn__env_set(e, name, eq + 1);
    free(name);
    if (rc) return rc;
  }
  return DYN_OK;
}

static int set_own(dyn__env_t *e, const dyn__graph_env_t *g, const dyn__worker_t *w) {
  int rc = dyn__env_set(e, DYN_ENV_SERVICE_CONFIG, g->config_text);
  if (!rc && g->control_socket && *g->control_socket)
    rc = dyn__env_set(e, DYN_ENV_CONTROL_SOCKET, g->control_socket);
  if (!rc && g->etcd) rc = dyn__env_set(e, DYN_ENV_ETCD_ENDPOINTS, g->etcd);
  if (!rc && g->nats) rc = dyn__env_set(e, DYN_ENV_NATS_SERVER, g->nats);
  if (!rc && g->host) rc = dyn__env_set(e, DYN_ENV_ADVERTISE_HOST, g->host);
  if (!rc) rc = dyn__env_set(e, DYN_ENV_SERVICE_NAME, w->svc->name);
  if (!rc && *w->svc->ns) rc = dyn__env_set(e, DYN_ENV_SERVICE_NAMESPACE, w->svc->ns);
  /* So that services resolve paths in their config (a tokenizer, say)
   * against the config file's directory, wherever serve was started. */
  char cfg[PATH_MAX];
  if (!rc && g->config_file && realpath(g->config_file, cfg))
    rc = dyn__env_set(e, DYN_ENV_CONFIG_FILE, cfg);
  /* ...or against the graph file's directory, which is what `dynamo build`
   * packs: data kept beside the graph travels with its artifact. */
  char graph[PATH_MAX];
  if (!rc && graph_dir(g->target, graph, sizeof graph))
    rc = dyn__env_set(e, DYN_ENV_GRAPH_DIR, graph);
  if (!rc) {
    char *deps = live_dependencies(w->svc);
    rc = !deps ? DYN_ENOMEM : dyn__env_set(e, DYN_ENV_SERVICE_DEPENDS, deps);
    free(deps);
  }
  if (!rc && g->all) {
    char *local = local_workers(g->all);
    rc = !local ? DYN_ENOMEM : dyn__env_set(e, DYN_ENV_LOCAL_WORKERS, local);
    free(local);
  }
  char num[32];
  snprintf(num, sizeof num, "%d", w->index);
  if (!rc) rc = dyn__env_set(e, DYN_ENV_WORKER_INDEX, num);
  snprintf(num, sizeof num, "%d", (int)getpid());
  if (!rc) rc = dyn__env_set(e, DYN_ENV_SUPERVISOR_PID, num);
  /* So that a worker's own drain fits inside the time we give it. */
  snprintf(num, sizeof num, "%g", g->grace_s);
  if (!rc) rc = dyn__env_set(e, DYN_ENV_GRACE_SECONDS, num);
  if (!rc && w->cuda) rc = dyn__env_set(e, "CUDA_VISIBLE_DEVICES", w->cuda);
  /* Set or cleared: an inherited DYN_HEALTH_PORT is the base, not a port
   * every worker may bind. */
  snprintf(num, sizeof num, "%d", w->health_port);
  if (!rc) rc = dyn__env_set(e, DYN_ENV_HEALTH_PORT, w->health_port ? num : "");
  /* Output goes through a pipe, where Python would buffer it in blocks and
   * a worker's log would arrive minutes late. */
  if (!rc && !g->is_c && !dyn__env_get(e, "PYTHONUNBUFFERED"))
    rc = dyn__env_set(e, "PYTHONUNBUFFERED", "1");
  return rc;
}

int dyn__worker_env(const dyn__graph_env_t *g, const dyn__worker_t *w, char ***out) {
  dyn__env_t e;
  int rc = dyn__env_init(&e);
  if (rc) return rc;
  if ((rc = set_service_envs(&e, w->svc->envs)) || (rc = set_own(&e, g, w))) {
    dyn__env_free(&e);
    return rc;
  }
  *out = dyn__env_take(&e);
  return DYN_OK;
}
