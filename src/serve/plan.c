/* plan.c - resolving a target into a plan, and checking the plan.
 *
 * Python graphs are resolved by Python (`$DYN_PYTHON -m dynamo.sdk.plan
 * TARGET`), because only Python can import the user's module; C graphs by
 * the dyn__c_plan hook. Either way the result is the same JSON document,
 * checked here field by field: the resolver is someone else's code, and its
 * mistakes should read as "the plan is wrong because ...", not as a
 * supervisor that misbehaves.
 */
#include "serve/plan.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env_names.h"
#include "common/fail.h"
#include "dynamo/status.h"
#include "serve/capture.h"
#include "serve/env.h"
#include "serve/cplan.h"

int dyn__target_parse(const char *target, char **graph, char **service, int *is_c, char *err,
                      size_t errlen) {
  const char *colon = strrchr(target, ':');
  if (!colon || colon == target || !colon[1])
    return dyn__fail(err, errlen, DYN_EINVAL,
                "TARGET '%s' must be FILE.py:Service, package.module:Service or LIB.so:Service",
                target);
  *graph = strndup(target, (size_t)(colon - target));
  *service = strdup(colon + 1);
  if (!*graph || !*service) {
    free(*graph);
    free(*service);
    return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  }
  size_t n = strlen(*graph);
  /* The same rule as `dynamo worker` (dyn__is_c_target): a name ending in .so. */
  *is_c = n > 3 && !strcmp(*graph + n - 3, ".so");
  return DYN_OK;
}

/* ---- checking --------------------------------------------------------- */

/* A count written as 2, 2.0 or "2"; resolvers differ in how they spell it. */
static int get_count(const json_t *v, int dflt, long *out) {
  if (!v || json_is_null(v)) {
    *out = dflt;
    return 1;
  }
  if (json_is_integer(v)) {
    *out = (long)json_integer_value(v);
    return 1;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d != (double)(long)d) return 0;
    *out = (long)d;
    return 1;
  }
  if (json_is_string(v)) {
    char *end;
    errno = 0;
    long n = strtol(json_string_value(v), &end, 10);
    if (errno || end == json_string_value(v) || *end) return 0;
    *out = n;
    return 1;
  }
  return 0;
}

static int env_entry(dyn__service_t *s, size_t *n, const char *name, const json_t *value,
                     char *err, size_t errlen) {
  if (!name || !*name || strchr(name, '='))
    return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': an env entry has no valid name",
                s->name);
  char num[64];
  const char *text;
  if (json_is_string(value)) text = json_string_value(value);
  else if (!value || json_is_null(value)) text = "";
  else if (json_is_integer(value)) snprintf(num, sizeof num, "%lld", (long long)json_integer_value(value)), text = num;
  else if (json_is_real(value)) snprintf(num, sizeof num, "%.17g", json_real_value(value)), text = num;
  else if (json_is_boolean(value)) text = json_is_true(value) ? "true" : "false";
  else
    return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': env %s must be a string, not a %s",
                s->name, name, json_is_object(value) ? "mapping" : "list");
  size_t len = strlen(name) + strlen(text) + 2;
  char *var = malloc(len);
  if (!var) return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  snprintf(var, len, "%s=%s", name, text);
  s->envs[(*n)++] = var;
  return DYN_OK;
}

static int check_envs(dyn__service_t *s, const json_t *envs, char *err, size_t errlen) {
  size_t cap = json_is_array(envs) ? json_array_size(envs) : json_is_object(envs) ? json_object_size(envs) : 0;
  if (envs && !json_is_null(envs) && !json_is_array(envs) && !json_is_object(envs))
    return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': envs must be a list of {name, value}",
                s->name);
  s->envs = calloc(cap + 1, sizeof *s->envs);
  if (!s->envs) return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  size_t n = 0;
  int rc = DYN_OK;
  if (json_is_array(envs)) {
    size_t i;
    json_t *e;
    json_array_foreach(envs, i, e) {
      if (!json_is_object(e))
        return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': envs[%zu] is not {name, value}",
                    s->name, i);
      if ((rc = env_entry(s, &n, json_string_value(json_object_get(e, "name")),
                          json_object_get(e, "value"), err, errlen)))
        return rc;
    }
  } else if (json_is_object(envs)) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)envs, k, v) {
      if ((rc = env_entry(s, &n, k, v, err, errlen))) return rc;
    }
  }
  return DYN_OK;
}

static int check_service(dyn__plan_t *p, size_t idx, json_t *js, char *err, size_t errlen) {
  dyn__service_t *s = &p->services[idx];
  s->json = js;
  if (!json_is_object(js))
    return dyn__fail(err, errlen, DYN_EINVAL, "services[%zu] is not an object", idx);
  s->name = json_string_value(json_object_get(js, "name"));
  if (!s->name || !*s->name)
    return dyn__fail(err, errlen, DYN_EINVAL, "services[%zu] has no name", idx);
  for (size_t i = 0; i < idx; i++)
    if (!strcmp(p->services[i].name, s->name))
      return dyn__fail(err, errlen, DYN_EINVAL, "service '%s' is listed twice", s->name);
  const json_t *ns = json_object_get(js, "namespace");
  if (ns && !json_is_null(ns) && !json_is_string(ns))
    return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': namespace must be a string", s->name);
  s->ns = json_is_string(ns) ? json_string_value(ns) : "";
  long n;
  if (!get_count(json_object_get(js, "workers"), 1, &n) || n < 1 || n > 4096)
    return dyn__fail(err, errlen, DYN_EINVAL,
                "service '%s': workers must be a whole number from 1 to 4096", s->name);
  s->workers = (int)n;
  const json_t *res = json_object_get(js, "resources");
  if (res && !json_is_null(res) && !json_is_object(res))
    return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': resources must be an object", s->name);
  if (!get_count(json_object_get(res, "gpu"), 0, &n) || n < 0 || n > 1024)
    return dyn__fail(err, errlen, DYN_EINVAL,
                "service '%s': resources.gpu must be a whole number of GPUs (0 or more)",
                s->name);
  s->gpus = (int)n;
  int rc = check_envs(s, json_object_get(js, "envs"), err, errlen);
  if (rc) return rc;
  const json_t *kind = json_object_get(js, "kind");
  if (json_is_string(kind) && !strcmp(json_string_value(kind), "c")) {
    const json_t *t = json_object_get(js, "target");
    if (!json_is_string(t) || !dyn__is_c_target(json_string_value(t)))
      return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': a C service needs a target lib.so:Name",
                  s->name);
    s->c_target = json_string_value(t);
  }
  const json_t *http = json_object_get(js, "http");
  if (http && !json_is_null(http)) {
    if (!json_is_object(http))
      return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': http must be an object or null",
                  s->name);
    const json_t *host = json_object_get(http, "host");
    s->http_host = json_is_string(host) ? json_string_value(host) : "0.0.0.0";
    if (!get_count(json_object_get(http, "port"), 0, &n) || n < 1 || n > 65535)
      return dyn__fail(err, errlen, DYN_EINVAL, "service '%s': http.port must be from 1 to 65535",
                  s->name);
    s->http_port = (int)n;
  }
  return DYN_OK;
}

int dyn__plan_from_json(json_t *doc, dyn__plan_t *p, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  if (!json_is_object(doc))
    return dyn__fail(err, errlen, DYN_EPROTO, "the plan is not a JSON object");
  p->json = json_incref(doc);
  int rc = DYN_OK;
  const json_t *services = json_object_get(doc, "services");
  if (!json_is_array(services) || json_array_size(services) == 0) {
    rc = dyn__fail(err, errlen, DYN_EPROTO, "the plan lists no services");
    goto out;
  }
  p->nservices = json_array_size(services);
  p->services = calloc(p->nservices, sizeof *p->services);
  if (!p->services) {
    rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < p->nservices; i++)
    if ((rc = check_service(p, i, json_array_get(services, i), err, errlen))) goto out;
  const json_t *t = json_object_get(doc, "target");
  p->target = json_is_string(t) ? json_string_value(t) : "";
  const json_t *entry = json_object_get(doc, "entry");
  p->entry = json_is_string(entry) ? json_string_value(entry) : "";
  if (*p->entry && !dyn__plan_find(p, p->entry)) {
    rc = dyn__fail(err, errlen, DYN_EPROTO, "the plan's entry '%s' is not one of its services",
              p->entry);
    goto out;
  }
  const json_t *kind = json_object_get(doc, "kind");
  if (json_is_string(kind)) p->is_c = !strcmp(json_string_value(kind), "c");
  const json_t *edges = json_object_get(doc, "edges");
  if (edges && !json_is_null(edges)) {
    size_t i;
    json_t *e;
    if (!json_is_array(edges)) {
      rc = dyn__fail(err, errlen, DYN_EPROTO, "the plan's edges are not a list");
      goto out;
    }
    json_array_foreach(edges, i, e) {
      /* An edge may lead out of the plan: to a service of another
       * language, served elsewhere. */
      if (json_array_size(e) != 2 || !json_is_string(json_array_get(e, 0)) ||
          !json_is_string(json_array_get(e, 1))) {
        rc = dyn__fail(err, errlen, DYN_EPROTO, "the plan's edges[%zu] is not a pair of service names",
                  i);
        goto out;
      }
    }
  }
out:
  if (rc) dyn__plan_free(p);
  return rc;
}

void dyn__plan_free(dyn__plan_t *p) {
  for (size_t i = 0; i < p->nservices; i++) dyn__strv_free(p->services[i].envs);
  free(p->services);
  json_decref(p->json);
  memset(p, 0, sizeof *p);
}

const dyn__service_t *dyn__plan_find(const dyn__plan_t *p, const char *name) {
  for (size_t i = 0; i < p->nservices; i++)
    if (p->services[i].name && !strcmp(p->services[i].name, name)) return &p->services[i];
  return NULL;
}

/* ---- resolving -------------------------------------------------------- */

/* The plan is one JSON document on stdout. A user module that prints while
 * it is imported puts text in front of it; the last line alone is then
 * tried, so that a stray print does not make the graph unservable. */
static json_t *parse_plan_output(const char *out) {
  json_t *doc = json_loads(out, 0, NULL);
  if (doc) return doc;
  const char *end = out + strlen(out);
  while (end > out && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ')) end--;
  const char *start = end;
  while (start > out && start[-1] != '\n') start--;
  if (start == out) return NULL;
  return json_loadb(start, (size_t)(end - start), 0, NULL);
}

int dyn__graph_timeout_parse(const char *text, double *seconds) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || *end || !(v > 0) || v > 86400) return DYN_EINVAL;
  *seconds = v;
  return DYN_OK;
}

/* While the resolver runs: a word after NOTICE_MS, since a graph that takes
 * long to import (or blocks) would otherwise look like a hung command. */
#define NOTICE_MS 2000

typedef struct {
  uv_timer_t timer;
  const char *target;
  double timeout_s;
  int closed;
} notice_t;

static void on_notice(uv_timer_t *t) {
  notice_t *n = t->data;
  fprintf(stderr,
          "loading the graph %s: still importing it after %g s; giving up after %g s "
          "(--graph-timeout, $" DYN_ENV_GRAPH_TIMEOUT ")\n",
          n->target, NOTICE_MS / 1000.0, n->timeout_s);
}

static void on_notice_closed(uv_handle_t *h) { ((notice_t *)h->data)->closed = 1; }

static int resolve_python(uv_loop_t *loop, const char *python, const char *target,
                          json_t *config, const char *config_file, double timeout_s,
                          json_t **doc, char **log, char *err, size_t errlen) {
  char *cfg = json_dumps(config, JSON_COMPACT);
  dyn__env_t env;
  if (!cfg || dyn__env_init(&env)) {
    free(cfg);
    return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  }
  int rc = dyn__env_set(&env, DYN_ENV_SERVICE_CONFIG, cfg);
  if (!rc) rc = dyn__env_set(&env, DYN_ENV_CONFIG_FILE, config_file ? config_file : "");
  free(cfg);
  if (rc) {
    dyn__env_free(&env);
    return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  }
  char *argv[] = {(char *)python, "-m", "dynamo.sdk.plan", (char *)target, NULL};
  dyn__captured_t c;
  int uv_err;
  notice_t notice = {.target = target, .timeout_s = timeout_s};
  uv_timer_init(loop, &notice.timer);
  notice.timer.data = &notice;
  uv_timer_start(&notice.timer, on_notice, NOTICE_MS, 0);
  rc = dyn__capture(loop, argv, env.vars, (uint64_t)(timeout_s * 1000), &c, &uv_err);
  uv_close((uv_handle_t *)&notice.timer, on_notice_closed);
  while (!notice.closed) uv_run(loop, UV_RUN_NOWAIT);
  dyn__env_free(&env);
  if (rc == DYN_ESYS)
    return dyn__fail(err, errlen, rc, "cannot run the resolver '%s -m dynamo.sdk.plan': %s%s",
                python, uv_strerror(uv_err),
                uv_err == UV_ENOENT ? " (set DYN_PYTHON to the Python that has dynamo)" : "");
  if (rc) return dyn__fail(err, errlen, rc, "out of memory reading the resolver's output");
  if (c.err_len) {
    *log = c.err;
    c.err = NULL;
  }
  if (c.timed_out || c.term_signal || c.exit_status) {
    if (c.timed_out)
      rc = dyn__fail(err, errlen, DYN_ETIMEDOUT,
                "resolving %s: loading the graph took longer than %g s, so it was stopped "
                "(does the graph file block while it is imported? a slow one needs a longer "
                "--graph-timeout or $" DYN_ENV_GRAPH_TIMEOUT ")", target, timeout_s);
    else if (c.term_signal)
      rc = dyn__fail(err, errlen, DYN_EREMOTE, "resolving %s failed: the resolver was killed by signal %d",
                target, c.term_signal);
    else
      rc = dyn__fail(err, errlen, DYN_EREMOTE, "resolving %s failed (the resolver exited with status %d)",
                target, (int)c.exit_status);
    dyn__captured_free(&c);
    return rc;
  }
  *doc = parse_plan_output(c.out);
  if (!*doc) {
    size_t n = c.out_len;
    rc = dyn__fail(err, errlen, DYN_EPROTO,
              "resolving %s: the resolver did not print a JSON plan on stdout%s%.*s%s", target,
              n ? ", it printed: " : " (it printed nothing)", n > 300 ? 300 : (int)n, c.out,
              n > 300 ? "..." : "");
  }
  dyn__captured_free(&c);
  return rc;
}

const char *dyn__python(void) {
  const char *python = getenv(DYN_ENV_PYTHON);
  return python && *python ? python : "python3";
}

static void show_log(char *log) {
  if (!log) return;
  fputs(log, stderr);
  if (log[0] && log[strlen(log) - 1] != '\n') fputc('\n', stderr);
  free(log);
}

int dyn__plan_resolve(uv_loop_t *loop, const char *target, json_t *config,
                      const char *config_file, double timeout_s, dyn__plan_t *out, char *err,
                      size_t errlen) {
  memset(out, 0, sizeof *out);
  if (timeout_s <= 0) {
    const char *env = getenv(DYN_ENV_GRAPH_TIMEOUT);
    timeout_s = DYN__GRAPH_TIMEOUT_S;
    if (env && *env && dyn__graph_timeout_parse(env, &timeout_s))
      return dyn__fail(err, errlen, DYN_EINVAL,
                       "$" DYN_ENV_GRAPH_TIMEOUT " '%s' is not a number of seconds (0 < s <= 86400)",
                       env);
  }
  char *graph, *svc;
  int is_c;
  int rc = dyn__target_parse(target, &graph, &svc, &is_c, err, errlen);
  if (rc) return rc;
  json_t *doc = NULL;
  if (is_c) {
    /* dyn__c_plan, like the Python resolver, names the config file in its
     * messages from $DYN_CONFIG_FILE. */
    if (setenv(DYN_ENV_CONFIG_FILE, config_file ? config_file : "", 1))
      rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    else
      rc = dyn__c_plan(graph, svc, config, &doc);
    if (rc)
      dyn__fail(err, errlen, rc, "cannot resolve the C graph %s: %s", target, dyn_strerror(rc));
  } else {
    char *log = NULL;
    rc = resolve_python(loop, dyn__python(), target, config, config_file, timeout_s, &doc, &log,
                        err, errlen);
    show_log(log);
  }
  free(graph);
  free(svc);
  if (rc) return rc;
  char why[512];
  rc = dyn__plan_from_json(doc, out, why, sizeof why);
  json_decref(doc);
  if (rc) {
    dyn__fail(err, errlen, rc, "the plan for %s is not usable: %s", target, why);
    return rc;
  }
  if (!*out->target) out->target = target; /* the caller keeps target alive */
  if (is_c) out->is_c = 1;
  return DYN_OK;
}
