/* k8s.c - Kubernetes objects for a built artifact.
 *
 * Objects are built as jansson values, in a fixed key order, and written
 * as YAML by the caller (yamlout.c). The choices that matter:
 *
 *  - One worker per pod, scaled by replicas: Kubernetes then restarts,
 *    places and counts workers, and the probes speak for exactly one
 *    process. `dynamo serve --service-name SVC` in the pod is still the
 *    parent: it reads the config, sets up the worker's environment and
 *    drains it on SIGTERM, as on a laptop.
 *  - Discovery on etcd and events on NATS, since pods share no Unix socket;
 *    the request plane stays direct TCP between pods: each worker listens
 *    on a fixed port and advertises its pod IP (status.podIP).
 *  - Names are DNS-1123 labels made from the artifact and service names;
 *    Service names must also start with a letter (DNS-1035).
 */
#include "package/k8s.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env_names.h"
#include "dynamo/status.h"
#include "package/artifact.h"
#include "common/fail.h"

/* dynamo's own objects: <app>-dynamo-etcd and so on. */
#define DYN_K8S_ETCD "dynamo-etcd"
#define DYN_K8S_NATS "dynamo-nats"
#define DYN_K8S_CONFIG "dynamo-config"

/* ---- quantities ------------------------------------------------------- */

int dyn__k8s_quantity_ok(const char *s) {
  /* <sign>? (<digits> (. <digits>?)? | . <digits>) <suffix>, where suffix is
   * a binary SI (Ki..Ei), a decimal SI (n u m "" k M G T P E) or an
   * exponent (e|E <sign>? <digits>). */
  const char *p = s;
  if (*p == '+' || *p == '-') p++;
  size_t whole = strspn(p, "0123456789");
  p += whole;
  size_t frac = 0;
  if (*p == '.') {
    p++;
    frac = strspn(p, "0123456789");
    p += frac;
  }
  if (!whole && !frac) return 0;
  static const char *const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m",
                                         "k", "M", "G", "T", "P", "E", NULL};
  for (const char *const *x = suffixes; *x; x++)
    if (!strcmp(p, *x)) return 1;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    size_t d = strspn(p, "0123456789");
    return d > 0 && !p[d];
  }
  return 0;
}

/* A resources value as a quantity string: "1Gi", 2, 0.5. */
static int quantity(const json_t *v, char *out, size_t cap) {
  if (json_is_string(v)) snprintf(out, cap, "%s", json_string_value(v));
  else if (json_is_integer(v)) snprintf(out, cap, "%lld", (long long)json_integer_value(v));
  else if (json_is_real(v)) snprintf(out, cap, "%g", json_real_value(v));
  else return 0;
  return dyn__k8s_quantity_ok(out);
}

/* ---- names and labels -------------------------------------------------
 * Kubernetes caps names and label values at 63 bytes, so long names are
 * cut; a cut name ends in a hash of the whole one, so that two long names
 * that share their first 50 bytes still give two objects. Names that are
 * the same once lower-cased (Worker, worker, WORKER, my_svc, my-svc) give
 * the same label, which the collision check below turns into an error. */

typedef struct names {
  char app[64];      /* the artifact's name */
  char version[64];
} names_t;

/* FNV-1a of s, folded to 32 bits: tells cut names apart, nothing more. */
static void short_hash(const char *s, char out[9]) {
  unsigned long long h = 14695981039346656037ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  snprintf(out, 9, "%08x", (unsigned)((h ^ (h >> 32)) & 0xffffffffu));
}

/* A DNS-1123 label from full of at most max bytes (max < cap, max >= 16);
 * when it has to be cut, it ends in "-" and a hash of full. */
static void fitted_label(const char *full, char *out, size_t cap, size_t max) {
  char whole[256];
  dyn__dns_label(full, whole, sizeof whole, sizeof whole - 1);
  if (strlen(whole) <= max && strlen(full) < sizeof whole - 1) {
    snprintf(out, cap, "%s", whole);
    return;
  }
  char h[9];
  short_hash(full, h);
  dyn__dns_label(full, out, cap, max - 9);
  size_t len = strlen(out);
  snprintf(out + len, cap - len, "-%s", h);
}

/* "<app>-<part>", a DNS-1123 label that starts with a letter. */
static void object_name(const names_t *n, const char *part, char *out, size_t cap) {
  char joined[512], label[64];
  snprintf(joined, sizeof joined, "%s-%s", n->app, part);
  fitted_label(joined, label, sizeof label, 62);
  /* label has at most 62 bytes, so the prefix always fits in 64. */
  size_t len = strlen(label), pre = !isalpha((unsigned char)label[0]);
  if (pre + len + 1 > cap) len = cap - pre - 1;
  if (pre) out[0] = 'd';
  memcpy(out + pre, label, len);
  out[pre + len] = 0;
}

/* What an object is, in app.kubernetes.io/component: a graph service's
 * objects are "worker"s; dynamo's own are "etcd", "nats" and "config".
 * Selectors carry it, so a graph service named Etcd never selects (or is
 * selected as) the deployed etcd. */
#define COMPONENT_WORKER "worker"

static json_t *labels(const names_t *n, const char *name, const char *component) {
  char label[64];
  fitted_label(name, label, sizeof label, 63);
  return json_pack("{s:s, s:s, s:s, s:s, s:s}", "app.kubernetes.io/name", label,
                   "app.kubernetes.io/component", component, "app.kubernetes.io/part-of", n->app,
                   "app.kubernetes.io/version", n->version, "app.kubernetes.io/managed-by",
                   "dynamo");
}

/* The subset of labels that picks a component's pods; version stays out,
 * so that a new version's pods are the same Service's endpoints. */
static json_t *selector(const names_t *n, const char *name, const char *component) {
  char label[64];
  fitted_label(name, label, sizeof label, 63);
  return json_pack("{s:s, s:s, s:s}", "app.kubernetes.io/name", label,
                   "app.kubernetes.io/component", component, "app.kubernetes.io/part-of", n->app);
}

/* The objects so far, and who asked for each, so that two that would
 * overwrite or share each other's pods are an error naming both. */
typedef struct gen {
  json_t *docs;  /* the objects, in apply order */
  json_t *seen;  /* "Kind/name" and "pods <selector>" -> who made it */
} gen_t;

static int claim(gen_t *g, const char *key, const char *who, const char *what, char *err,
                 size_t errlen) {
  const char *prev = json_string_value(json_object_get(g->seen, key));
  if (prev)
    return dyn__fail(err, errlen, DYN_EINVAL,
                     "%s and %s would both get %s; Kubernetes names and labels are lowercase "
                     "letters, digits and '-', so rename one of them", prev, who, what);
  json_object_set_new(g->seen, key, json_string(who));
  return DYN_OK;
}

/* Appends doc (stolen) after checking that no earlier object has its kind
 * and name or, for a workload, its pod selector. who names its origin. */
static int add(gen_t *g, json_t *doc, const char *who, char *err, size_t errlen) {
  if (!doc) return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  const char *kind = json_string_value(json_object_get(doc, "kind"));
  const char *name = json_string_value(json_object_get(json_object_get(doc, "metadata"), "name"));
  char key[256], what[256];
  snprintf(key, sizeof key, "%s/%s", kind, name);
  snprintf(what, sizeof what, "the %s named %s", kind, name);
  int rc = claim(g, key, who, what, err, errlen);
  json_t *sel = json_object_get(json_object_get(json_object_get(doc, "spec"), "selector"),
                                "matchLabels");
  if (!rc && sel) {
    char *text = json_dumps(sel, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    else {
      snprintf(key, sizeof key, "pods %s", text);
      snprintf(what, sizeof what, "the pod selector %s", text);
      rc = claim(g, key, who, what, err, errlen);
      free(text);
    }
  }
  if (rc) json_decref(doc);
  else json_array_append_new(g->docs, doc);
  return rc;
}

static json_t *metadata(const names_t *n, const dyn__k8s_opts_t *o, const char *name,
                        const char *label, const char *component) {
  json_t *m = json_pack("{s:s}", "name", name);
  if (o->ns) json_object_set_new(m, "namespace", json_string(o->ns));
  json_object_set_new(m, "labels", labels(n, label, component));
  return m;
}

static json_t *env(const char *name, const char *value) {
  return json_pack("{s:s, s:s}", "name", name, "value", value);
}

static json_t *port(const char *name, int number) {
  return json_pack("{s:s, s:i, s:s}", "name", name, "containerPort", number, "protocol", "TCP");
}

static json_t *service_object(const names_t *n, const dyn__k8s_opts_t *o, const char *name,
                              const char *label, const char *component, json_t *ports) {
  return json_pack("{s:s, s:s, s:o, s:{s:s, s:o, s:o}}", "apiVersion", "v1", "kind", "Service",
                   "metadata", metadata(n, o, name, label, component), "spec", "type",
                   "ClusterIP", "selector", selector(n, label, component), "ports", ports);
}

/* ---- the graph's services --------------------------------------------- */

static int resources(const json_t *svc, const char *name, json_t **out, char *err,
                     size_t errlen) {
  const json_t *res = json_object_get(svc, "resources");
  json_t *q = json_object();
  const char *keys[] = {"cpu", "memory", NULL};
  char text[64];
  for (const char **k = keys; *k; k++) {
    const json_t *v = json_object_get(res, *k);
    if (!v || json_is_null(v)) continue;
    if (!quantity(v, text, sizeof text)) {
      json_decref(q);
      return dyn__fail(err, errlen, DYN_EINVAL,
                       "service %s: resources.%s is not a Kubernetes quantity (like 500m, 2, "
                       "1Gi, 512Mi)", name, *k);
    }
    json_object_set_new(q, *k, json_string(text));
  }
  json_int_t gpus = json_integer_value(json_object_get(res, "gpu"));
  /* Extended resources (GPUs) cannot be overcommitted: requests must equal
   * limits, so both get the same values. */
  if (gpus > 0) json_object_set_new(q, "nvidia.com/gpu", json_integer(gpus));
  *out = json_object_size(q) ? json_pack("{s:O, s:O}", "requests", q, "limits", q) : json_object();
  json_decref(q);
  return DYN_OK;
}

/* The variables every pod gets from us; a service's own envs may not set
 * them (a pod with a name twice is ambiguous, and ours must win). The
 * service's name and namespace are not among them: `dynamo serve` in the
 * pod sets those for its worker (serve/worker_env.c), as everywhere. */
static const char *const pod_env_names[] = {
    DYN_ENV_ETCD_ENDPOINTS, DYN_ENV_NATS_SERVER, DYN_ENV_ADVERTISE_HOST, DYN_ENV_LISTEN_HOST,
    DYN_ENV_LISTEN_PORT,    DYN_ENV_HEALTH_PORT, NULL};

static int user_envs(const json_t *svc, const char *svc_name, json_t *envs, char *err,
                     size_t errlen) {
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(svc, "envs"), i, e) {
    const char *k = json_string_value(json_object_get(e, "name"));
    const char *v = json_string_value(json_object_get(e, "value"));
    if (!k) continue;
    for (const char *const *ours = pod_env_names; *ours; ours++)
      if (!strcmp(k, *ours))
        return dyn__fail(err, errlen, DYN_EINVAL,
                         "service %s: ServiceArgs.envs sets %s, which dynamo deploy sets in every "
                         "pod (to reach etcd, NATS and the other pods); remove it from the "
                         "config, or use --etcd / --nats for other servers", svc_name, k);
    json_array_append_new(envs, env(k, v ? v : ""));
  }
  return DYN_OK;
}

static json_t *probe(const char *path, int period, int failures) {
  return json_pack("{s:{s:s, s:s}, s:i, s:i, s:i}", "httpGet", "path", path, "port", "health",
                   "periodSeconds", period, "timeoutSeconds", 2, "failureThreshold", failures);
}

static int deployment(const names_t *n, const dyn__k8s_opts_t *o, const json_t *svc,
                      const char *etcd, const char *nats, gen_t *g, char *err, size_t errlen) {
  const char *svc_name = json_string_value(json_object_get(svc, "name"));
  if (!svc_name || !*svc_name)
    return dyn__fail(err, errlen, DYN_EINVAL, "the manifest lists a service without a name");
  json_int_t workers = json_integer_value(json_object_get(svc, "workers"));
  if (workers < 1) workers = 1;
  json_t *res = NULL;
  int rc = resources(svc, svc_name, &res, err, errlen);
  if (rc) return rc;
  char name[64], cname[64], workers1[512], host[512], listen[16], health[16];
  object_name(n, svc_name, name, sizeof name);
  fitted_label(svc_name, cname, sizeof cname, 63);
  snprintf(workers1, sizeof workers1, "--%s.ServiceArgs.workers=1", svc_name);
  /* A config's HTTP host (127.0.0.1 on a laptop) would hide the service
   * from its Kubernetes Service: in a pod it listens on every address. */
  snprintf(host, sizeof host, "--%s.host=0.0.0.0", svc_name);
  snprintf(listen, sizeof listen, "%d", DYN_K8S_LISTEN_PORT);
  snprintf(health, sizeof health, "%d", DYN_K8S_HEALTH_PORT);

  json_t *envs = json_array();
  if ((rc = user_envs(svc, svc_name, envs, err, errlen))) {
    json_decref(envs), json_decref(res);
    return rc;
  }
  json_array_append_new(envs, env(DYN_ENV_ETCD_ENDPOINTS, etcd));
  json_array_append_new(envs, env(DYN_ENV_NATS_SERVER, nats));
  json_array_append_new(envs, json_pack("{s:s, s:{s:{s:s}}}", "name", DYN_ENV_ADVERTISE_HOST,
                                        "valueFrom", "fieldRef", "fieldPath", "status.podIP"));
  json_array_append_new(envs, env(DYN_ENV_LISTEN_HOST, "0.0.0.0"));
  json_array_append_new(envs, env(DYN_ENV_LISTEN_PORT, listen));
  json_array_append_new(envs, env(DYN_ENV_HEALTH_PORT, health));

  json_t *ports = json_array();
  json_array_append_new(ports, port("dynamo", DYN_K8S_LISTEN_PORT));
  json_array_append_new(ports, port("health", DYN_K8S_HEALTH_PORT));
  const json_t *http = json_object_get(svc, "http");
  json_int_t http_port = json_integer_value(json_object_get(http, "port"));
  if (http_port == DYN_K8S_LISTEN_PORT || http_port == DYN_K8S_HEALTH_PORT) {
    json_decref(envs), json_decref(ports), json_decref(res);
    return dyn__fail(err, errlen, DYN_EINVAL,
                     "service %s: HTTP port %lld is one dynamo deploy uses in every pod (%d, %d)",
                     svc_name, (long long)http_port, DYN_K8S_LISTEN_PORT, DYN_K8S_HEALTH_PORT);
  }
  if (http_port > 0) json_array_append_new(ports, port("http", (int)http_port));
  json_t *command = json_pack("[s, s, s, s, s, s, s, s]", "dynamo", "serve", "/app",
                              "--service-name", svc_name, "-f", "/etc/dynamo/config.yaml",
                              workers1);
  if (http_port > 0) json_array_append_new(command, json_string(host));

  json_t *container = json_pack(
      "{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:[{s:s, s:s, s:b}]}",
      "name", cname, "image", o->image, "command", command, "ports", ports, "env", envs, "resources", res,
      /* Import and connect can take a while; until /live first answers the
       * startup probe holds the liveness probe back. */
      "startupProbe", probe("/live", 2, 90), "livenessProbe", probe("/live", 10, 3),
      "readinessProbe", probe("/health", 5, 2),
      "volumeMounts", "name", "config", "mountPath", "/etc/dynamo", "readOnly", 1);
  char cm[64];
  object_name(n, DYN_K8S_CONFIG, cm, sizeof cm);
  /* Every worker serves Prometheus metrics on its health port (GET
   * /metrics): the annotations Prometheus' kubernetes-pods scrape job
   * reads (deploy/grafana/dynamo.json charts what it collects). */
  json_t *scrape = json_pack("{s:s, s:s, s:s}", "prometheus.io/scrape", "true",
                             "prometheus.io/port", health, "prometheus.io/path", "/metrics");
  json_t *d = json_pack(
      "{s:s, s:s, s:o, s:{s:I, s:{s:o}, s:{s:{s:o, s:o}, s:{s:i, s:[o], s:[{s:s, s:{s:s}}]}}}}",
      "apiVersion", "apps/v1", "kind", "Deployment", "metadata", metadata(n, o, name, svc_name,
      COMPONENT_WORKER), "spec", "replicas", workers, "selector", "matchLabels", selector(n,
      svc_name, COMPONENT_WORKER), "template", "metadata", "labels", labels(n, svc_name,
      COMPONENT_WORKER), "annotations", scrape, "spec", "terminationGracePeriodSeconds", 30,
      "containers", container, "volumes", "name", "config", "configMap", "name", cm);
  char who[300];
  snprintf(who, sizeof who, "service '%s'", svc_name);
  rc = add(g, d, who, err, errlen);
  if (!rc && http_port > 0)
    rc = add(g, service_object(n, o, name, svc_name, COMPONENT_WORKER,
                               json_pack("[{s:s, s:I, s:s, s:s}]", "name", "http", "port",
                                         http_port, "targetPort", "http", "protocol", "TCP")),
             who, err, errlen);
  return rc;
}

/* ---- etcd and NATS ----------------------------------------------------
 * Named <app>-dynamo-etcd and <app>-dynamo-nats (a graph service named
 * Etcd gets <app>-etcd), and labelled with their own component, so their
 * selectors never match a graph service's pods. */

static json_t *statefulset(const names_t *n, const dyn__k8s_opts_t *o, const char *part,
                           const char *component, json_t *container) {
  char name[64];
  object_name(n, part, name, sizeof name);
  return json_pack(
      "{s:s, s:s, s:o, s:{s:s, s:i, s:{s:o}, s:{s:{s:o}, s:{s:[o], s:[{s:s, s:{}}]}}}}",
      "apiVersion", "apps/v1", "kind", "StatefulSet", "metadata",
      metadata(n, o, name, part, component), "spec", "serviceName", name, "replicas", 1,
      "selector", "matchLabels", selector(n, part, component), "template", "metadata", "labels",
      labels(n, part, component), "spec", "containers", container, "volumes", "name", "data",
      "emptyDir");
}

static int etcd_objects(const names_t *n, const dyn__k8s_opts_t *o, gen_t *g, char *err,
                        size_t errlen) {
  char name[64], adv[128];
  object_name(n, DYN_K8S_ETCD, name, sizeof name);
  snprintf(adv, sizeof adv, "--advertise-client-urls=http://%s:2379", name);
  json_t *c = json_pack(
      "{s:s, s:s, s:[s, s, s, s, s], s:[o, o], s:{s:{s:s, s:s}, s:i}, s:[{s:s, s:s}]}", "name",
      "etcd", "image", DYN_K8S_ETCD_IMAGE, "command", "etcd", "--name=etcd0",
      "--data-dir=/var/lib/etcd/data", "--listen-client-urls=http://0.0.0.0:2379", adv, "ports",
      port("client", 2379), port("peer", 2380), "readinessProbe", "httpGet", "path", "/health",
      "port", "client", "periodSeconds", 5, "volumeMounts", "name", "data", "mountPath",
      "/var/lib/etcd");
  int rc = add(g, statefulset(n, o, DYN_K8S_ETCD, "etcd", c), "dynamo's etcd", err, errlen);
  if (rc) return rc;
  return add(g, service_object(n, o, name, DYN_K8S_ETCD, "etcd",
                               json_pack("[{s:s, s:i, s:s, s:s}]", "name", "client", "port", 2379,
                                         "targetPort", "client", "protocol", "TCP")),
             "dynamo's etcd", err, errlen);
}

static int nats_objects(const names_t *n, const dyn__k8s_opts_t *o, gen_t *g, char *err,
                        size_t errlen) {
  char name[64];
  object_name(n, DYN_K8S_NATS, name, sizeof name);
  json_t *c = json_pack(
      "{s:s, s:s, s:[s, s, s, s], s:[o, o], s:{s:{s:s, s:s}, s:i}, s:[{s:s, s:s}]}", "name",
      "nats", "image", DYN_K8S_NATS_IMAGE, "args", "--port", "4222", "--http_port", "8222",
      "ports", port("client", 4222), port("monitor", 8222), "readinessProbe", "httpGet", "path",
      "/healthz", "port", "monitor", "periodSeconds", 5, "volumeMounts", "name", "data",
      "mountPath", "/data");
  int rc = add(g, statefulset(n, o, DYN_K8S_NATS, "nats", c), "dynamo's NATS", err, errlen);
  if (rc) return rc;
  return add(g, service_object(n, o, name, DYN_K8S_NATS, "nats",
                               json_pack("[{s:s, s:i, s:s, s:s}]", "name", "client", "port", 4222,
                                         "targetPort", "client", "protocol", "TCP")),
             "dynamo's NATS", err, errlen);
}

/* ---- all of it -------------------------------------------------------- */

static int all_objects(json_t *manifest, const names_t *n, const dyn__k8s_opts_t *o, gen_t *g,
                       char *err, size_t errlen) {
  char cm[64], etcd[160], nats[160], name[64];
  object_name(n, DYN_K8S_CONFIG, cm, sizeof cm);
  int rc = add(g, json_pack("{s:s, s:s, s:o, s:{s:s}}", "apiVersion", "v1", "kind", "ConfigMap",
                            "metadata", metadata(n, o, cm, DYN_K8S_CONFIG, "config"), "data",
                            "config.yaml", o->config_yaml),
               "dynamo's ConfigMap", err, errlen);
  if (!rc && o->etcd) {
    snprintf(etcd, sizeof etcd, "%s", o->etcd);
  } else if (!rc) {
    object_name(n, DYN_K8S_ETCD, name, sizeof name);
    snprintf(etcd, sizeof etcd, "http://%s:2379", name);
    rc = etcd_objects(n, o, g, err, errlen);
  }
  if (!rc && o->nats) {
    snprintf(nats, sizeof nats, "%s", o->nats);
  } else if (!rc) {
    object_name(n, DYN_K8S_NATS, name, sizeof name);
    snprintf(nats, sizeof nats, "nats://%s:4222", name);
    rc = nats_objects(n, o, g, err, errlen);
  }
  size_t i;
  json_t *svc;
  json_array_foreach(json_object_get(manifest, "services"), i, svc) {
    if (rc) break;
    rc = deployment(n, o, svc, etcd, nats, g, err, errlen);
  }
  return rc;
}

int dyn__k8s_objects(json_t *manifest, const dyn__k8s_opts_t *o, json_t **out, char *err,
                     size_t errlen) {
  *out = NULL;
  names_t n;
  const char *app = json_string_value(json_object_get(manifest, "name"));
  const char *version = json_string_value(json_object_get(manifest, "version"));
  if (!app || !version) return dyn__fail(err, errlen, DYN_EINVAL, "the manifest has no name or version");
  fitted_label(app, n.app, sizeof n.app, 40);
  snprintf(n.version, sizeof n.version, "%s", version);
  if (o->ns) {
    char label[64];
    dyn__dns_label(o->ns, label, sizeof label, 63);
    if (strcmp(label, o->ns))
      return dyn__fail(err, errlen, DYN_EINVAL,
                       "--namespace '%s' is not a DNS-1123 label (lowercase letters, digits and "
                       "'-', at most 63)", o->ns);
  }
  gen_t g = {.docs = json_array(), .seen = json_object()};
  int rc = all_objects(manifest, &n, o, &g, err, errlen);
  json_decref(g.seen);
  if (rc) json_decref(g.docs);
  else *out = g.docs;
  return rc;
}
