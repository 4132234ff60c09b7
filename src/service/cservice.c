/* cservice.c - C services: loading a shared object's table, and the worker.
 *
 * A shared object exports `dyn_services`, a NULL-terminated array of
 * dyn_service_def_t. The supervisor reads it for the plan (serve/cplan.c),
 * then starts `dynamo worker lib.so:Entry --service NAME` per worker; the
 * worker runs here: it joins the runtime,
 * builds clients for the service's dependencies, runs on_start, serves the
 * endpoints, and on SIGTERM drains, runs on_shutdown and exits.
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <jansson.h>

#include "common/env_names.h"
#include "dynamo/dynamo.h"
#include "dynamo/service.h"
#include "service/health.h"

const char *dyn_service_namespace(const dyn_service_def_t *d) {
  return d->namespace_ && *d->namespace_ ? d->namespace_ : "dynamo";
}

int dyn_service_load(const char *so_path, const dyn_service_def_t *const **out) {
  /* dlopen needs a path with a slash to skip the library search path. */
  char path[4096];
  snprintf(path, sizeof path, "%s%s", strchr(so_path, '/') ? "" : "./", so_path);
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "error: cannot load %s: %s\n", so_path, dlerror());
    return DYN_ENOTFOUND;
  }
  const dyn_service_def_t *const *defs = dlsym(h, "dyn_services");
  if (!defs) {
    fprintf(stderr, "error: %s does not export dyn_services (see dynamo/service.h)\n", so_path);
    return DYN_ENOTFOUND;
  }
  for (size_t i = 0; defs[i]; i++) {
    if (defs[i]->abi && defs[i]->abi != DYN_SERVICE_ABI) {
      fprintf(stderr, "error: %s: service %s was built for service ABI %d, this dynamo has %d\n",
              so_path, defs[i]->name, defs[i]->abi, DYN_SERVICE_ABI);
      return DYN_EINVAL;
    }
  }
  *out = defs;
  return DYN_OK;
}

const dyn_service_def_t *dyn_service_find(const dyn_service_def_t *const *defs,
                                          const char *name) {
  const char *slash = strchr(name, '/');
  if (slash) name = slash + 1;
  for (size_t i = 0; defs[i]; i++)
    if (!strcmp(defs[i]->name, name)) return defs[i];
  return NULL;
}

/* ---- the worker -------------------------------------------------------- */

typedef struct dep_client {
  struct dep_client *next;
  char service[128], endpoint[128];
  dyn_client_t *client;
} dep_client_t;

struct dyn_service_ctx {
  const dyn_service_def_t *def;
  dyn_runtime_t *rt;
  json_t *section; /* this service's config, Common keys resolved */
  json_t *cache;   /* key -> dumped JSON, to hand out stable strings */
  dep_client_t *clients;
  int index;
  void *data;
};

dyn_runtime_t *dyn_service_runtime(dyn_service_ctx_t *ctx) { return ctx->rt; }
const dyn_service_def_t *dyn_service_def(dyn_service_ctx_t *ctx) { return ctx->def; }
int dyn_service_worker_index(dyn_service_ctx_t *ctx) { return ctx->index; }
void dyn_service_set_data(dyn_service_ctx_t *ctx, void *data) { ctx->data = data; }
void *dyn_service_data(dyn_service_ctx_t *ctx) { return ctx->data; }

const char *dyn_service_config_json(dyn_service_ctx_t *ctx, const char *key) {
  json_t *cached = json_object_get(ctx->cache, key);
  if (cached) return json_string_value(cached);
  json_t *v = json_object_get(ctx->section, key);
  if (!v) return NULL;
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!s) return NULL;
  json_object_set_new(ctx->cache, key, json_string(s));
  free(s);
  return json_string_value(json_object_get(ctx->cache, key));
}

const char *dyn_service_config_string(dyn_service_ctx_t *ctx, const char *key, const char *dflt) {
  json_t *v = json_object_get(ctx->section, key);
  return json_is_string(v) ? json_string_value(v) : dflt;
}

long long dyn_service_config_int(dyn_service_ctx_t *ctx, const char *key, long long dflt) {
  json_t *v = json_object_get(ctx->section, key);
  return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

static int listed(const dyn_service_def_t *def, const char *service) {
  for (size_t i = 0; def->depends && def->depends[i]; i++) {
    const char *d = def->depends[i], *slash = strchr(d, '/');
    if (!strcmp(slash ? slash + 1 : d, service) || !strcmp(d, service)) return 1;
  }
  return 0;
}

/* DYN_SERVICE_DEPENDS, set by `dynamo serve`, names the edges that survived
 * the graph's link() calls; without it (a worker started by hand) every
 * listed dependency is live. */
int dyn_service_has_dependency(dyn_service_ctx_t *ctx, const char *service) {
  if (!listed(ctx->def, service)) return 0;
  const char *live = getenv(DYN_ENV_SERVICE_DEPENDS);
  if (!live) return 1;
  const char *slash = strchr(service, '/');
  const char *name = slash ? slash + 1 : service;
  size_t n = strlen(name);
  for (const char *p = live; *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && !strncmp(p, name, n)) return 1;
    if (!end) break;
    p = end + 1;
  }
  return 0;
}

dyn_client_t *dyn_service_client(dyn_service_ctx_t *ctx, const char *service,
                                 const char *endpoint) {
  for (dep_client_t *c = ctx->clients; c; c = c->next)
    if (!strcmp(c->service, service) && !strcmp(c->endpoint, endpoint)) return c->client;
  if (!listed(ctx->def, service)) {
    dyn_log(DYN_LOG_ERROR, "%s: dyn_service_client(%s): not in the service's depends",
            ctx->def->name, service);
    return NULL;
  }
  if (!dyn_service_has_dependency(ctx, service)) {
    dyn_log(DYN_LOG_ERROR, "%s: dyn_service_client(%s): the edge was pruned by link()",
            ctx->def->name, service);
    return NULL;
  }
  /* "ns/Name" names another namespace; a bare name shares ours. */
  char path[400];
  const char *slash = strchr(service, '/');
  if (slash)
    snprintf(path, sizeof path, "%s/%s", service, endpoint);
  else
    snprintf(path, sizeof path, "%s/%s/%s", dyn_service_namespace(ctx->def), service, endpoint);
  dyn_endpoint_t *ep;
  dep_client_t *c = calloc(1, sizeof *c);
  if (!c || dyn_runtime_endpoint(ctx->rt, path, &ep) || dyn_endpoint_client(ep, &c->client)) {
    free(c);
    return NULL;
  }
  const char *wait = getenv(DYN_ENV_DEPENDS_WAIT_MS);
  dyn_client_set_wait(c->client, wait ? atoi(wait) : 30000);
  snprintf(c->service, sizeof c->service, "%s", service);
  snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
  c->next = ctx->clients;
  ctx->clients = c;
  return c->client;
}

/* This service's section with the Common keys it opted into. */
static json_t *resolve_section(json_t *config, const char *name) {
  json_t *section = json_object_get(config, name);
  json_t *out = json_object();
  json_t *common = json_object_get(config, "Common");
  json_t *wanted = json_object_get(section, "common-configs");
  size_t i;
  json_t *k;
  json_array_foreach(wanted, i, k) {
    json_t *v = json_object_get(common, json_string_value(k));
    if (v) json_object_set(out, json_string_value(k), v);
  }
  if (json_is_object(section)) json_object_update(out, section);
  return out;
}

static dyn_service_ctx_t *g_ctx;

static void on_stop_signal(uv_signal_t *s, int sig) {
  uv_signal_stop(s);
  dyn__health_set("draining");
  dyn_log(DYN_LOG_INFO, "%s: signal %d, shutting down", g_ctx->def->name, sig);
  const char *g = getenv(DYN_ENV_GRACE_SECONDS);
  /* From a loop callback this only starts the drain; dyn_runtime_run
   * returns once it is over, and on_shutdown runs then (see below). */
  dyn_runtime_shutdown(g_ctx->rt, (int)((g ? atof(g) : 10.0) * 500));
}

/* What dyn_service_worker_run set up before serving; after on_shutdown, or when
 * on_start failed (so a service that cannot start leaks nothing either). */
static void worker_teardown(dyn_service_ctx_t *ctx, json_t *config) {
  dyn__health_stop();
  while (ctx->clients) {
    dep_client_t *c = ctx->clients;
    ctx->clients = c->next;
    dyn_client_free(c->client);
    free(c);
  }
  dyn_runtime_destroy(ctx->rt);
  json_decref(ctx->section);
  json_decref(ctx->cache);
  json_decref(config);
}

int dyn_service_worker_run(const char *target, const char *service) {
  const char *sup = getenv(DYN_ENV_SUPERVISOR_PID);
  if (sup) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != (pid_t)atoi(sup)) return 1;
  }
  char so_path[4096];
  const char *colon = strrchr(target, ':');
  snprintf(so_path, sizeof so_path, "%.*s", (int)(colon - target), target);
  const dyn_service_def_t *const *defs;
  if (dyn_service_load(so_path, &defs)) return 1;
  const dyn_service_def_t *def = dyn_service_find(defs, service);
  if (!def) {
    fprintf(stderr, "error: %s has no service %s\n", so_path, service);
    return 1;
  }
  json_error_t jerr;
  const char *raw = getenv(DYN_ENV_SERVICE_CONFIG);
  json_t *config = raw && *raw ? json_loads(raw, 0, &jerr) : json_object();
  if (!config) {
    fprintf(stderr, "error: DYNAMO_SERVICE_CONFIG is not JSON: %s\n", jerr.text);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  dyn_service_ctx_t ctx = {0};
  ctx.def = def;
  ctx.section = resolve_section(config, def->name);
  ctx.cache = json_object();
  const char *idx = getenv(DYN_ENV_WORKER_INDEX);
  ctx.index = idx ? atoi(idx) : 0;
  g_ctx = &ctx;
  int rc = dyn_runtime_create(NULL, &ctx.rt);
  if (rc) return 1;
  if (dyn__health_start(ctx.rt, def->name)) return 1; /* $DYN_HEALTH_PORT */
  for (size_t i = 0; def->depends && def->depends[i]; i++) {
    if (!dyn_service_has_dependency(&ctx, def->depends[i])) continue;
    const dyn_service_def_t *dep = dyn_service_find(defs, def->depends[i]);
    for (const dyn_endpoint_def_t *e = dep ? dep->endpoints : NULL; e && e->name; e++)
      dyn_service_client(&ctx, def->depends[i], e->name);
  }
  if (def->on_start && (rc = def->on_start(&ctx)) != 0) {
    fprintf(stderr, "error: %s: on_start failed (%d)\n", def->name, rc);
    worker_teardown(&ctx, config);
    return 1;
  }
  for (const dyn_endpoint_def_t *e = def->endpoints; e && e->name; e++) {
    char path[400];
    dyn_endpoint_t *ep;
    snprintf(path, sizeof path, "%s/%s/%s", dyn_service_namespace(def), def->name, e->name);
    rc = dyn_runtime_endpoint(ctx.rt, path, &ep);
    if (!rc) rc = dyn_endpoint_serve(ep, e->handler, &ctx);
    if (rc) {
      fprintf(stderr, "error: cannot serve %s: %s\n", path, dyn_strerror(rc));
      if (def->on_shutdown) def->on_shutdown(&ctx);
      worker_teardown(&ctx, config);
      return 1;
    }
  }
  static uv_signal_t term, intr;
  uv_signal_init(dyn_runtime_loop(ctx.rt), &term);
  uv_signal_init(dyn_runtime_loop(ctx.rt), &intr);
  uv_signal_start(&term, on_stop_signal, SIGTERM);
  uv_signal_start(&intr, on_stop_signal, SIGINT);
  uv_unref((uv_handle_t *)&term);
  uv_unref((uv_handle_t *)&intr);
  dyn__health_set("ready"); /* registered, and on_start returned */
  printf("%s ready: instance %llx%s%s\n", def->name,
         (unsigned long long)dyn_runtime_instance_id(ctx.rt),
         def->endpoints && def->endpoints->name ? " at " : "",
         def->endpoints && def->endpoints->name ? dyn_runtime_address(ctx.rt) : "");
  fflush(stdout);
  dyn_runtime_run(ctx.rt);
  /* After the drain, as service.h promises: a service that relays work of
   * its own (the LLM Frontend's HTTP streams, counted with
   * dyn_runtime_hold) must not tear it down while it still runs. */
  if (def->on_shutdown) def->on_shutdown(&ctx);
  uv_close((uv_handle_t *)&term, NULL);
  uv_close((uv_handle_t *)&intr, NULL);
  worker_teardown(&ctx, config);
  return 0;
}
