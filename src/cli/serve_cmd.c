/* serve_cmd.c - `dynamo serve`: run a whole graph on this machine.
 *
 * The order of things is the point of this file. Everything that can be
 * wrong with the request (options, config file, overrides, the graph, the
 * GPU demand) is found out before anything is started, so that a mistake
 * costs an error message and not a half-started graph to clean up. Only
 * then does the control plane open and the workers start, all on one loop.
 * --dry-run stops just before that point and shows what would run.
 *
 * This file is the command line and that order. Which processes a plan
 * becomes is serve/workers.c's business, the environment each one gets
 * serve/worker_env.c's, and running them serve/supervisor.c's.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/env_names.h"
#include "dynamo/control.h"
#include "dynamo/runtime.h"
#include "dynamo/status.h"
#include "package/artifact.h"
#include "config/merge.h"
#include "serve/env.h"
#include "serve/gpu.h"
#include "serve/plan.h"
#include "serve/supervisor.h"
#include "serve/worker_env.h"
#include "serve/workers.h"

/* Linux refuses a single environment string longer than this (E2BIG). */
#define ENV_STRING_MAX (128 * 1024)

static void usage(FILE *f) {
  fprintf(f,
"usage: dynamo serve TARGET [-f CONFIG.yaml] [--Service.key=value ...] [options]\n"
"\n"
"Runs every service of a graph on this machine: one process per worker, an\n"
"embedded control plane for discovery and events, restarts for workers that\n"
"crash, and an orderly stop on Ctrl-C.\n"
"\n"
"TARGET\n"
"  path/to/graph.py:Service    a Python file and the graph's entry service\n"
"  package.module:Service      the same, by module name\n"
"  path/to/libgraph.so:Service a C graph\n"
"  ARTIFACT                    what `dynamo build` made: its directory, its\n"
"                              dynamo.yaml or its .tar.gz (unpacked into a\n"
"                              temporary directory, removed at exit); served\n"
"                              with its config.yaml unless -f names another\n"
"\n"
"configuration\n"
"  -f, --file CONFIG.yaml      one section per service, plus an optional Common\n"
"                              section; for example\n"
"                                Common: {model: llama}\n"
"                                Backend: {ServiceArgs: {workers: 2}}\n"
"  --Service.key=value         set one key, overriding the file; deeper keys\n"
"                              are dotted (--Backend.ServiceArgs.workers=2);\n"
"                              the value is JSON when it parses as JSON\n"
"                              (2, true, null, \"text\", [1,2]), else a string\n"
"  The merged configuration reaches the resolver and every worker as JSON in\n"
"  $DYNAMO_SERVICE_CONFIG.\n"
"\n"
"options\n"
"  --dry-run                   print the graph, the merged configuration and\n"
"                              the processes that would run; start nothing\n"
"  --service-name NAME         run only NAME's workers (the other services run\n"
"                              elsewhere)\n"
"  --etcd URL                  discovery on etcd (also $ETCD_ENDPOINTS), e.g.\n"
"                              http://10.0.0.1:2379; workers then listen on all\n"
"                              interfaces and advertise --host\n"
"  --nats URL                  events on NATS (also $NATS_SERVER)\n"
"  --host ADDRESS              the address this machine's workers advertise\n"
"                              (also $DYN_ADVERTISE_HOST)\n"
"  --control-socket PATH       host the embedded control plane at PATH (default:\n"
"                              a fresh temporary directory); if a control\n"
"                              plane already answers there, join it instead:\n"
"                              that is how two `serve --service-name` runs on\n"
"                              one machine make one graph\n"
"  --grace SECONDS             on Ctrl-C or SIGTERM, how long workers get to\n"
"                              exit before they are killed (default 10); a\n"
"                              second Ctrl-C kills them at once\n"
"  --graph-timeout SECONDS     how long loading a Python graph (importing the\n"
"                              TARGET file) may take before serve gives up\n"
"                              (default 60; also $DYN_GRAPH_TIMEOUT)\n"
"  --gpu-oversubscribe         when the graph asks for more GPUs than there\n"
"                              are, deal them out again from the first\n"
"  --no-gpu-alloc              leave CUDA_VISIBLE_DEVICES as it is\n"
"  --health-port BASE          worker i (counted over the whole graph from 0)\n"
"                              serves GET /live and /health on port BASE+i\n"
"                              (also $DYN_HEALTH_PORT); /health is 200 once the\n"
"                              worker is registered and its start hooks ran\n"
"  -h, --help                  this text\n"
"\n"
"processes\n"
"  Each worker runs `$DYN_PYTHON -m dynamo.sdk.worker TARGET --service NAME`\n"
"  (`dynamo worker ...` for C graphs) in its own process group, with\n"
"  DYNAMO_SERVICE_CONFIG, DYN_CONTROL_SOCKET, DYN_SERVICE_NAME,\n"
"  DYN_SERVICE_NAMESPACE, DYN_WORKER_INDEX, DYN_SUPERVISOR_PID,\n"
"  DYN_GRACE_SECONDS, CUDA_VISIBLE_DEVICES (\"\" for a worker that asks no\n"
"  GPU) and the service's own envs. Its output is prefixed with [Service.i].\n"
"  A worker that exits is restarted after 0.5 s, 1 s, 2 s, ... (at most 8 s);\n"
"  one that exits 5 times within 60 s stops the graph (exit status 1).\n"
"\n"
"environment\n"
"  DYN_PYTHON      the Python that runs the resolver and the workers\n"
"                  (default: python3 from PATH)\n"
"  DYN_GPU_COUNT   the number of GPUs to share out (default: the devices in\n"
"                  CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`)\n"
"  DYN_LOG         the supervisor's log level (error, warn, info, debug)\n");
}

typedef struct serve {
  const char *target;
  const char *file;
  const char *only; /* --service-name */
  const char *control_socket; /* --control-socket */
  const char *etcd, *nats, *host; /* --etcd, --nats, --host */
  double grace;
  double graph_timeout; /* --graph-timeout, or 0: $DYN_GRAPH_TIMEOUT or the default */
  int dry_run, oversubscribe, no_gpu_alloc;
  int health_base; /* --health-port, or 0 */
  dyn__artifact_t artifact; /* when TARGET is a built artifact */
  const char **overrides;
  size_t noverrides;

  json_t *config;
  char *config_text; /* compact JSON */
  dyn__plan_t plan;
  dyn__gpus_t gpus;
  char self[PATH_MAX]; /* this executable, which runs C workers */
  dyn__workers_options_t wopt;
  dyn__workers_t workers;
  char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
  char tmpdir[sizeof(((struct sockaddr_un *)0)->sun_path) - sizeof "/control.sock" + 1];
} serve_t;

/* ---- options ---------------------------------------------------------- */

static int parse_health_port(serve_t *sv, const char *v) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < 1 || n > 65535) {
    fprintf(stderr, "dynamo serve: --health-port '%s' is not a port number (1-65535)\n", v);
    return 1;
  }
  sv->health_base = (int)n;
  return 0;
}

static int parse_args(serve_t *sv, int argc, char **argv) {
  sv->grace = 10;
  sv->overrides = calloc((size_t)argc, sizeof *sv->overrides);
  if (!sv->overrides) return 1;
  int only_positional = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    int r;
    if (only_positional || a[0] != '-' || !a[1]) {
      if (sv->target) {
        fprintf(stderr, "dynamo serve: one TARGET only; '%s' is a second one (try --help)\n", a);
        return 2;
      }
      sv->target = a;
    } else if (!strcmp(a, "--")) {
      only_positional = 1;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return -1;
    } else if (!strcmp(a, "--dry-run")) {
      sv->dry_run = 1;
    } else if (!strcmp(a, "--gpu-oversubscribe")) {
      sv->oversubscribe = 1;
    } else if (!strcmp(a, "--no-gpu-alloc")) {
      sv->no_gpu_alloc = 1;
    } else if ((r = dyn__cli_option(argc, argv, &i, "-f", &v)) ||
               (r = dyn__cli_option(argc, argv, &i, "--file", &v))) {
      if (r < 0) return 2;
      if (sv->file) {
        fprintf(stderr, "dynamo serve: one config file only (%s and %s)\n", sv->file, v);
        return 2;
      }
      sv->file = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--service-name", &v))) {
      if (r < 0) return 2;
      sv->only = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--etcd", &v))) {
      if (r < 0) return 2;
      sv->etcd = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--nats", &v))) {
      if (r < 0) return 2;
      sv->nats = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--host", &v))) {
      if (r < 0) return 2;
      sv->host = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--control-socket", &v))) {
      if (r < 0) return 2;
      if (strlen(v) >= sizeof sv->sock) {
        fprintf(stderr, "dynamo serve: --control-socket path too long (max %zu bytes)\n",
                sizeof sv->sock - 1);
        return 2;
      }
      sv->control_socket = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--grace", &v))) {
      if (r < 0) return 2;
      char *end;
      errno = 0;
      sv->grace = strtod(v, &end);
      if (errno || end == v || *end || !isfinite(sv->grace) || sv->grace < 0 ||
          sv->grace > 86400) {
        fprintf(stderr, "dynamo serve: --grace '%s' is not a number of seconds\n", v);
        return 2;
      }
    } else if ((r = dyn__cli_option(argc, argv, &i, "--graph-timeout", &v))) {
      if (r < 0) return 2;
      if (dyn__graph_timeout_parse(v, &sv->graph_timeout)) {
        fprintf(stderr, "dynamo serve: --graph-timeout '%s' is not a number of seconds "
                        "(0 < s <= 86400)\n", v);
        return 2;
      }
    } else if ((r = dyn__cli_option(argc, argv, &i, "--health-port", &v))) {
      if (r < 0 || parse_health_port(sv, v)) return 2;
    } else if (a[1] == '-' && dyn__config_is_override(a + 2)) {
      sv->overrides[sv->noverrides++] = a + 2;
    } else {
      fprintf(stderr, "dynamo serve: unknown option '%s' (try --help)\n", a);
      return 2;
    }
  }
  if (!sv->target) {
    fprintf(stderr, "dynamo serve: no TARGET given\n\n");
    usage(stderr);
    return 2;
  }
  return 0;
}

/* ---- configuration ---------------------------------------------------- */

static int load_config(serve_t *sv) {
  char err[1024];
  if (dyn__config_merge(sv->file, sv->overrides, sv->noverrides, &sv->config, err, sizeof err)) {
    fprintf(stderr, "dynamo serve: %s\n", err);
    return 1;
  }
  sv->config_text = json_dumps(sv->config, JSON_COMPACT);
  if (!sv->config_text) return 1;
  if (strlen(sv->config_text) + sizeof DYN_ENV_SERVICE_CONFIG "=" > ENV_STRING_MAX) {
    fprintf(stderr,
            "dynamo serve: the merged configuration is %zu bytes of JSON; an environment "
            "variable holds at most %d\n",
            strlen(sv->config_text), ENV_STRING_MAX);
    return 1;
  }
  return 0;
}

/* A section named after no service is most likely a typo. */
static void warn_stray_sections(const serve_t *sv) {
  const char *k;
  json_t *v;
  json_object_foreach(sv->config, k, v) {
    if (!strcmp(k, "Common") || !json_is_object(v) || dyn__plan_find(&sv->plan, k)) continue;
    fprintf(stderr, "dynamo serve: warning: config section '%s' names no service of the graph\n",
            k);
  }
}

/* ---- the process plan ------------------------------------------------- */

static void list_services(const serve_t *sv, FILE *f) {
  for (size_t i = 0; i < sv->plan.nservices; i++)
    fprintf(f, "%s%s", i ? ", " : "", sv->plan.services[i].name);
}

/* --service-name is checked first: a typo costs no GPU detection. */
static int plan_processes(serve_t *sv, uv_loop_t *loop) {
  char err[4096];
  if (sv->only && !dyn__plan_find(&sv->plan, sv->only)) {
    fprintf(stderr, "dynamo serve: --service-name %s: the graph has no such service; it has: ",
            sv->only);
    list_services(sv, stderr);
    fprintf(stderr, "\n");
    return 1;
  }
  if (!sv->no_gpu_alloc && dyn__gpu_detect(loop, &sv->gpus, err, sizeof err)) {
    fprintf(stderr, "dynamo serve: %s\n", err);
    return 1;
  }
  size_t selflen = sizeof sv->self;
  if (uv_exepath(sv->self, &selflen)) snprintf(sv->self, sizeof sv->self, "dynamo");
  sv->wopt = (dyn__workers_options_t){.target = sv->target,
                                      .only = sv->only,
                                      .python = dyn__python(),
                                      .self = sv->self,
                                      .gpus = sv->no_gpu_alloc ? NULL : &sv->gpus,
                                      .oversubscribe = sv->oversubscribe,
                                      .health_base = sv->health_base};
  if (dyn__workers_plan(&sv->plan, &sv->wopt, &sv->workers, err, sizeof err)) {
    fprintf(stderr, "dynamo serve: %s\n", err);
    return 1;
  }
  return 0;
}

/* ---- --dry-run -------------------------------------------------------- */

static void print_quoted(const char *s) {
  if (*s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:=,+@%") ==
                strlen(s)) {
    fputs(s, stdout);
    return;
  }
  putchar('\'');
  for (; *s; s++) {
    if (*s == '\'') fputs("'\\''", stdout);
    else putchar(*s);
  }
  putchar('\'');
}

static void print_strings(const json_t *arr, const char *sep) {
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) {
    printf("%s%s", i ? sep : "", json_is_string(v) ? json_string_value(v) : "?");
  }
}

static void dry_run(const serve_t *sv) {
  const dyn__plan_t *p = &sv->plan;
  printf("graph: %s (%s)", p->target, p->is_c ? "C" : "python");
  if (*p->entry) printf(", entry %s", p->entry);
  printf("\n\nservices (%zu):\n", p->nservices);
  for (size_t i = 0; i < p->nservices; i++) {
    const dyn__service_t *s = &p->services[i];
    printf("  %s:", s->name);
    if (*s->ns) printf(" namespace %s,", s->ns);
    printf(" %d worker%s, %d GPU%s each", s->workers, s->workers == 1 ? "" : "s", s->gpus,
           s->gpus == 1 ? "" : "s");
    const json_t *eps = json_object_get(s->json, "endpoints");
    if (json_array_size(eps)) {
      printf(", endpoints ");
      print_strings(eps, " ");
    }
    if (s->http_host) {
      printf(", HTTP %s:%d", s->http_host, s->http_port);
      const json_t *routes = json_object_get(json_object_get(s->json, "http"), "routes");
      size_t r;
      json_t *route;
      json_array_foreach(routes, r, route) {
        const char *m = json_string_value(json_object_get(route, "method"));
        const char *path = json_string_value(json_object_get(route, "path"));
        if (path) printf("%s%s %s", r ? ", " : " (", m ? m : "*", path);
        if (r + 1 == json_array_size(routes)) printf(")");
      }
    }
    const json_t *deps = json_object_get(s->json, "dependencies");
    if (json_array_size(deps)) {
      printf(", depends on ");
      print_strings(deps, " ");
    }
    if (!dyn__workers_serves(&sv->wopt, s)) printf(" (not served here)");
    printf("\n");
    for (char **e = s->envs; *e; e++) printf("    env %s\n", *e);
  }
  const json_t *edges = json_object_get(p->json, "edges");
  printf("\nedges (%zu):\n", json_array_size(edges));
  size_t i;
  json_t *e;
  json_array_foreach(edges, i, e) {
    printf("  %s -> %s\n", json_string_value(json_array_get(e, 0)),
           json_string_value(json_array_get(e, 1)));
  }
  char *cfg = json_dumps(sv->config, JSON_INDENT(2));
  printf("\nconfig (" DYN_ENV_SERVICE_CONFIG "):\n%s\n", cfg ? cfg : "?");
  free(cfg);
  printf("\nprocesses (%zu):\n", sv->workers.n);
  for (size_t k = 0; k < sv->workers.n; k++) {
    const dyn__worker_t *pr = &sv->workers.w[k];
    printf("  %s: ", pr->label);
    if (pr->cuda) printf("CUDA_VISIBLE_DEVICES=\"%s\" ", pr->cuda);
    if (pr->health_port) printf(DYN_ENV_HEALTH_PORT "=%d ", pr->health_port);
    for (char **a = pr->argv; *a; a++) {
      if (a != pr->argv) putchar(' ');
      print_quoted(*a);
    }
    printf("\n");
  }
  if (sv->no_gpu_alloc) printf("\nGPUs: not allocated (--no-gpu-alloc)\n");
  else printf("\nGPUs: %zu (%s)%s\n", sv->gpus.count, sv->gpus.source,
              sv->oversubscribe ? ", shared when short (--gpu-oversubscribe)" : "");
  fflush(stdout);
}

/* ---- running ---------------------------------------------------------- */

static void on_started(void *arg) {
  const serve_t *sv = arg;
  const dyn__workers_t *ws = &sv->workers;
  printf("dynamo serve: %zu worker process(es) for %zu service(s)\n", ws->n, ws->nservices);
  for (size_t k = 0; k < ws->n; k++)
    if (ws->w[k].health_port)
      printf("%s health: http://127.0.0.1:%d/health\n", ws->w[k].label, ws->w[k].health_port);
  for (size_t i = 0; i < sv->plan.nservices; i++) {
    const dyn__service_t *s = &sv->plan.services[i];
    if (!dyn__workers_serves(&sv->wopt, s) || !s->http_host) continue;
    const char *h = s->http_host;
    /* A wildcard bind is not an address to click on; loopback is. */
    if (!strcmp(h, "0.0.0.0") || !*h)
      printf("%s HTTP: http://127.0.0.1:%d (listening on all interfaces, %s)\n", s->name,
             s->http_port, *h ? h : "0.0.0.0");
    else if (!strcmp(h, "::") || !strcmp(h, "[::]"))
      printf("%s HTTP: http://[::1]:%d (listening on all interfaces, ::)\n", s->name,
             s->http_port);
    else if (strchr(h, ':') && h[0] != '[')
      printf("%s HTTP: http://[%s]:%d\n", s->name, h, s->http_port);
    else
      printf("%s HTTP: http://%s:%d\n", s->name, h, s->http_port);
  }
  fflush(stdout);
}

static int make_socket_dir(serve_t *sv) {
  const char *base = getenv("TMPDIR");
  const char *tail = "/dynamo-serve-XXXXXX";
  /* A Unix socket path is short (108 bytes); a deep TMPDIR falls back. */
  if (!base || !*base || strlen(base) + strlen(tail) >= sizeof sv->tmpdir) base = "/tmp";
  snprintf(sv->tmpdir, sizeof sv->tmpdir, "%s%s", base, tail);
  if (!mkdtemp(sv->tmpdir)) {
    fprintf(stderr, "dynamo serve: cannot create a directory for the control socket in %s: %s\n",
            base, strerror(errno));
    sv->tmpdir[0] = 0;
    return 1;
  }
  snprintf(sv->sock, sizeof sv->sock, "%s/control.sock", sv->tmpdir);
  return 0;
}

/* Spawns every worker and runs until the graph stops; returns the exit code. */
static int supervise(serve_t *sv, uv_loop_t *loop) {
  dyn__sup_options_t opt = {.grace_s = sv->grace, .on_started = on_started, .arg = sv};
  dyn__supervisor_t *sup = NULL;
  int code = 1;
  if (dyn__sup_new(loop, &opt, &sup)) return 1;
  dyn__graph_env_t genv = {.config_text = sv->config_text,
                           .control_socket = sv->sock,
                           .etcd = sv->etcd,
                           .nats = sv->nats,
                           .host = sv->host,
                           .config_file = sv->file,
                           .target = sv->target,
                           .grace_s = sv->grace,
                           .is_c = sv->plan.is_c,
                           .all = &sv->workers};
  for (size_t k = 0; k < sv->workers.n; k++) {
    const dyn__worker_t *w = &sv->workers.w[k];
    char **env = NULL;
    int rc = dyn__worker_env(&genv, w, &env);
    if (!rc) rc = dyn__sup_add(sup, w->label, w->argv, env);
    dyn__strv_free(env);
    if (rc) {
      fprintf(stderr, "dynamo serve: out of memory\n");
      dyn__sup_free(sup);
      return 1;
    }
  }
  code = dyn__sup_run(sup);
  dyn__sup_free(sup);
  return code;
}

static int run_graph(serve_t *sv, uv_loop_t *loop) {
  if (sv->etcd && sv->nats) {
    /* Discovery and events live elsewhere: nothing to host here. */
    int code = supervise(sv, loop);
    uv_run(loop, UV_RUN_DEFAULT);
    return code;
  }
  if (sv->control_socket)
    snprintf(sv->sock, sizeof sv->sock, "%s", sv->control_socket);
  else if (make_socket_dir(sv))
    return 1;
  dyn_control_t *cp = NULL;
  int rc = dyn_control_start(loop, sv->sock, &cp);
  if (rc == DYN_EEXIST && sv->control_socket) {
    /* Another serve hosts this graph's control plane: join it. */
    printf("dynamo serve: joining the control plane at %s\n", sv->sock);
    cp = NULL;
  } else if (rc) {
    fprintf(stderr, "dynamo serve: cannot start the control plane on %s: %s\n", sv->sock,
            dyn_strerror(rc));
    if (sv->tmpdir[0]) rmdir(sv->tmpdir);
    return 1;
  }
  dyn_log(DYN_LOG_INFO, "serve: control plane on %s", sv->sock);
  int code = supervise(sv, loop);
  /* The control plane outlives the workers, so that those stopping
   * gracefully can still deregister. */
  if (cp) dyn_control_stop(cp);
  uv_run(loop, UV_RUN_DEFAULT);
  if (sv->tmpdir[0]) {
    unlink(sv->sock);
    if (rmdir(sv->tmpdir))
      fprintf(stderr, "dynamo serve: cannot remove %s: %s\n", sv->tmpdir, strerror(errno));
  }
  return code;
}

int dyn__cmd_serve(int argc, char **argv) {
  serve_t sv = {0};
  int code = parse_args(&sv, argc, argv);
  if (code) {
    free(sv.overrides);
    return code < 0 ? 0 : code;
  }
  const char *env;
  if (!sv.etcd && (env = getenv(DYN_ENV_ETCD_ENDPOINTS)) && *env) sv.etcd = env;
  if (!sv.nats && (env = getenv(DYN_ENV_NATS_SERVER)) && *env) sv.nats = env;
  if (!sv.host && (env = getenv(DYN_ENV_ADVERTISE_HOST)) && *env) sv.host = env;
  if (!sv.health_base && (env = getenv(DYN_ENV_HEALTH_PORT)) && *env &&
      parse_health_port(&sv, env)) {
    free(sv.overrides);
    return 2;
  }
  if (dyn__artifact_is(sv.target)) {
    /* A built artifact: its manifest names the graph inside it, and its
     * config.yaml is the config it was built with. */
    char aerr[2048];
    dyn__artifact_guard_signals(); /* until the supervisor's handlers take over */
    if (dyn__artifact_open(sv.target, &sv.artifact, aerr, sizeof aerr)) {
      fprintf(stderr, "dynamo serve: %s\n", aerr);
      free(sv.overrides);
      return 1;
    }
    sv.target = sv.artifact.target;
    if (!sv.file) sv.file = sv.artifact.config_path;
  }
  /* A closed stdout must not kill the supervisor while workers run. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t *loop = uv_default_loop();
  if ((code = load_config(&sv))) goto out;
  char err[1024];
  int rc = dyn__plan_resolve(loop, sv.target, sv.config, sv.file, sv.graph_timeout, &sv.plan,
                              err, sizeof err);
  if (rc) {
    fprintf(stderr, "dynamo serve: %s\n", err);
    code = 1;
    goto out;
  }
  warn_stray_sections(&sv);
  if ((code = plan_processes(&sv, loop))) goto out;
  if (sv.dry_run) {
    dry_run(&sv);
    goto out;
  }
  code = run_graph(&sv, loop);
out:
  dyn__workers_free(&sv.workers);
  dyn__gpu_free(&sv.gpus);
  dyn__plan_free(&sv.plan);
  free(sv.config_text);
  json_decref(sv.config);
  free(sv.overrides);
  dyn__artifact_close(&sv.artifact);
  return code;
}
