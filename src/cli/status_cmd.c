/* status_cmd.c - `dynamo status [--watch]`: the graph being served, as the
 * control plane and the processes themselves tell it.
 *
 * Three sources, all through the runtime, none on the request path:
 *  - discovery's "instances/" keys (discovery.h): every instance of every
 *    endpoint and its address. A key lives exactly as long as its process,
 *    so this is the list of what is served;
 *  - the processes' answers to a status poll (events.h,
 *    DYN_STATUS_POLL_SUBJECT): requests in flight, and the services that
 *    serve no endpoint (a Frontend), which discovery does not list;
 *  - the LLM Workers' "load_metrics" events (llm/services/protocol.h),
 *    which they publish at least once a second for the Router anyway: KV
 *    blocks in use and the queue.
 * One pass polls, waits ONCE_WAIT_MS so that every Worker published its
 * load once, prints and exits. --watch polls every second and redraws
 * DRAW_DELAY_MS after each poll, once the answers are in.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "common/array.h"
#include "dynamo/control.h"
#include "dynamo/discovery.h"
#include "dynamo/events.h"
#include "dynamo/runtime.h"
#include "llm/services/protocol.h"

#define ONCE_WAIT_MS 1100   /* Workers publish their load at least every 1000 ms */
#define SYNC_WAIT_MS 5000   /* how long discovery may take to send its snapshot */
#define POLL_EVERY_MS 1000
#define DRAW_DELAY_MS 300
#define STALE_MS 2500       /* a process silent for two polls is gone */
#define SERVICE_MAX 130     /* "ns/component", each name at most 64 */

/* One discovery key: an endpoint served by one process. */
typedef struct instance {
  char *key;
  char service[SERVICE_MAX];
  uint64_t id;
  char address[96];
} instance_t;

/* A process's last answer to a poll. */
typedef struct report {
  uint64_t id;
  char service[SERVICE_MAX]; /* "" when it did not say */
  char address[96];
  long long pid, inflight;
  int draining;
  uint64_t seen_ms;
} report_t;

typedef struct load {
  dyn__proto_load_t m;
  uint64_t seen_ms;
} load_t;

typedef struct row {
  const char *service, *address;
  uint64_t id;
  const report_t *report;
  const load_t *load;
} row_t;

typedef struct status {
  dyn_runtime_t *rt;
  uv_loop_t *loop;
  char where[512]; /* the control plane, in words */
  int watch, tty, synced, code;
  uint64_t started_ms;
  instance_t *insts;
  size_t ninsts, cap_insts;
  report_t *reports;
  size_t nreports, cap_reports;
  load_t *loads;
  size_t nloads, cap_loads;
  uv_timer_t poll_timer, draw_timer;
  uv_signal_t sigint, sigterm;
} status_t;

/* ---- what discovery says ------------------------------------------------ */

static void instance_forget(status_t *st, size_t i) {
  free(st->insts[i].key);
  st->insts[i] = st->insts[--st->ninsts];
}

/* key: "instances/{ns}/{component}/{endpoint}:{id in hex}". */
static void instance_put(status_t *st, const char *key, const char *value, size_t len) {
  const char *ns = key + strlen("instances/");
  const char *slash = strchr(ns, '/');
  const char *slash2 = slash ? strchr(slash + 1, '/') : NULL;
  const char *colon = strrchr(key, ':');
  if (!slash2 || !colon || colon < slash2 || slash2 - ns >= SERVICE_MAX) return;
  instance_t in = {0};
  memcpy(in.service, ns, (size_t)(slash2 - ns));
  in.id = strtoull(colon + 1, NULL, 16);
  json_t *v = json_loadb(value, len, 0, NULL);
  const char *addr = json_string_value(json_object_get(v, "address"));
  snprintf(in.address, sizeof in.address, "%s", addr && *addr ? addr : "-");
  json_decref(v);
  for (size_t i = 0; i < st->ninsts; i++) {
    if (!strcmp(st->insts[i].key, key)) {
      in.key = st->insts[i].key;
      st->insts[i] = in;
      return;
    }
  }
  if (dyn__grow((void **)&st->insts, &st->cap_insts, st->ninsts + 1, sizeof *st->insts) ||
      !(in.key = strdup(key)))
    return; /* out of memory: the instance goes unlisted */
  st->insts[st->ninsts++] = in;
}

static void on_watch(dyn_watch_event_t ev, const char *key, const char *value, size_t len,
                     void *ud) {
  status_t *st = ud;
  if (ev == DYN_WATCH_PUT) {
    instance_put(st, key, value, len);
  } else if (ev == DYN_WATCH_DELETE) {
    for (size_t i = 0; i < st->ninsts; i++)
      if (!strcmp(st->insts[i].key, key)) instance_forget(st, i--);
  } else if (ev == DYN_WATCH_SYNCED) {
    st->synced = 1;
  } else if (ev == DYN_WATCH_RESET) {
    while (st->ninsts) instance_forget(st, 0); /* a fresh snapshot follows */
  }
}

/* ---- what the processes say --------------------------------------------- */

static void on_report(const char *subject, const void *data, size_t len, void *ud) {
  (void)subject;
  status_t *st = ud;
  json_t *v = json_loadb(data, len, 0, NULL);
  const char *id = json_string_value(json_object_get(v, "instance_id"));
  if (!id) {
    json_decref(v);
    return;
  }
  report_t r = {.id = strtoull(id, NULL, 10), .seen_ms = uv_now(st->loop)};
  const char *s = json_string_value(json_object_get(v, "service"));
  snprintf(r.service, sizeof r.service, "%s", s ? s : "");
  s = json_string_value(json_object_get(v, "address"));
  snprintf(r.address, sizeof r.address, "%s", s && *s ? s : "-");
  r.pid = json_integer_value(json_object_get(v, "pid"));
  r.inflight = json_integer_value(json_object_get(v, "inflight"));
  r.draining = json_is_true(json_object_get(v, "draining"));
  json_decref(v);
  for (size_t i = 0; i < st->nreports; i++) {
    if (st->reports[i].id == r.id) {
      st->reports[i] = r;
      return;
    }
  }
  if (!dyn__grow((void **)&st->reports, &st->cap_reports, st->nreports + 1, sizeof r))
    st->reports[st->nreports++] = r;
}

static void on_load(const char *subject, const void *data, size_t len, void *ud) {
  (void)subject;
  status_t *st = ud;
  load_t l = {.seen_ms = uv_now(st->loop)};
  if (dyn__proto_load_decode(data, len, &l.m)) return;
  for (size_t i = 0; i < st->nloads; i++) {
    if (st->loads[i].m.worker_id == l.m.worker_id) {
      st->loads[i] = l;
      return;
    }
  }
  if (!dyn__grow((void **)&st->loads, &st->cap_loads, st->nloads + 1, sizeof l))
    st->loads[st->nloads++] = l;
}

static const report_t *find_report(const status_t *st, uint64_t id, uint64_t now) {
  for (size_t i = 0; i < st->nreports; i++)
    if (st->reports[i].id == id && now - st->reports[i].seen_ms <= STALE_MS)
      return &st->reports[i];
  return NULL;
}

static const load_t *find_load(const status_t *st, uint64_t id, uint64_t now) {
  for (size_t i = 0; i < st->nloads; i++)
    if (st->loads[i].m.worker_id == id && now - st->loads[i].seen_ms <= STALE_MS)
      return &st->loads[i];
  return NULL;
}

/* ---- the table ----------------------------------------------------------- */

static int row_cmp(const void *a, const void *b) {
  const row_t *x = a, *y = b;
  int c = strcmp(x->service, y->service);
  if (!c) c = strcmp(x->address, y->address);
  if (!c) c = x->id < y->id ? -1 : x->id > y->id;
  return c;
}

static int has_row(const row_t *rows, size_t n, const char *service, uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (rows[i].id == id && !strcmp(rows[i].service, service)) return 1;
  return 0;
}

static int has_instance(const status_t *st, uint64_t id) {
  for (size_t i = 0; i < st->ninsts; i++)
    if (st->insts[i].id == id) return 1;
  return 0;
}

/* One row per (service, process): discovery's instances (an endpoint each,
 * so a process with two endpoints of one component is one row), then the
 * processes that answered the poll but serve nothing. NULL on no memory. */
static row_t *collect(const status_t *st, uint64_t now, size_t *n) {
  row_t *rows = calloc(st->ninsts + st->nreports + 1, sizeof *rows);
  if (!rows) return NULL;
  *n = 0;
  for (size_t i = 0; i < st->ninsts; i++) {
    const instance_t *in = &st->insts[i];
    if (!has_row(rows, *n, in->service, in->id))
      rows[(*n)++] = (row_t){.service = in->service, .address = in->address, .id = in->id};
  }
  for (size_t i = 0; i < st->nreports; i++) {
    const report_t *r = &st->reports[i];
    if (r->service[0] && now - r->seen_ms <= STALE_MS && !has_instance(st, r->id))
      rows[(*n)++] = (row_t){.service = r->service, .address = r->address, .id = r->id};
  }
  for (size_t i = 0; i < *n; i++) {
    rows[i].report = find_report(st, rows[i].id, now);
    rows[i].load = find_load(st, rows[i].id, now);
  }
  qsort(rows, *n, sizeof *rows, row_cmp);
  return rows;
}

static void print_row(const row_t *r) {
  char id[20], pid[24], inflight[32], kv[64], queue[24];
  snprintf(id, sizeof id, "%" PRIx64, r->id);
  snprintf(pid, sizeof pid, "-");
  snprintf(inflight, sizeof inflight, "-");
  snprintf(kv, sizeof kv, "-");
  snprintf(queue, sizeof queue, "-");
  if (r->report) {
    snprintf(pid, sizeof pid, "%lld", r->report->pid);
    snprintf(inflight, sizeof inflight, "%lld%s", r->report->inflight,
             r->report->draining ? " draining" : "");
  }
  if (r->load) {
    const dyn__proto_load_t *m = &r->load->m;
    double pct = m->kv_blocks_total ? 100.0 * (double)m->kv_blocks_used / (double)m->kv_blocks_total
                                    : 0.0;
    snprintf(kv, sizeof kv, "%" PRIu64 "/%" PRIu64 " (%.0f%%)", m->kv_blocks_used,
             m->kv_blocks_total, pct);
    snprintf(queue, sizeof queue, "%" PRIu64, m->waiting);
  }
  printf("%-24s %-16s %-8s %-21s %-12s %-20s %s\n", r->service, id, pid, r->address, inflight,
         kv, queue);
}

/* Prints one frame; returns the number of instances in it. */
static size_t draw(status_t *st) {
  uint64_t now = uv_now(st->loop);
  size_t n = 0;
  row_t *rows = collect(st, now, &n);
  if (!rows) {
    fprintf(stderr, "dynamo status: out of memory\n");
    return 0;
  }
  size_t services = 0;
  for (size_t i = 0; i < n; i++)
    if (!i || strcmp(rows[i].service, rows[i - 1].service)) services++;
  if (st->watch && st->tty) fputs("\033[H\033[2J", stdout); /* redraw, as top does */
  char clock[16];
  time_t t = time(NULL);
  strftime(clock, sizeof clock, "%H:%M:%S", localtime(&t));
  if (n) {
    printf("dynamo status: %zu service%s, %zu instance%s, through %s at %s\n", services,
           services == 1 ? "" : "s", n, n == 1 ? "" : "s", st->where, clock);
    printf("%-24s %-16s %-8s %-21s %-12s %-20s %s\n", "SERVICE", "INSTANCE", "PID", "ADDRESS",
           "INFLIGHT", "KV USED", "QUEUE");
    for (size_t i = 0; i < n; i++) print_row(&rows[i]);
  } else {
    printf("dynamo status: no graph is served through %s at %s\n", st->where, clock);
  }
  if (st->watch && !st->tty) putchar('\n'); /* frames apart in a log */
  fflush(stdout);
  free(rows);
  return n;
}

/* ---- the loop ----------------------------------------------------------- */

static void poll_processes(status_t *st) {
  int rc = dyn_publish(st->rt, DYN_STATUS_POLL_SUBJECT, "", 0);
  if (rc) dyn_log(DYN_LOG_WARN, "status: cannot poll the processes: %s", dyn_strerror(rc));
}

static void on_draw(uv_timer_t *t) {
  status_t *st = t->data;
  uint64_t waited = uv_now(st->loop) - st->started_ms;
  if (!st->synced) {
    if (waited < SYNC_WAIT_MS) {
      uv_timer_start(&st->draw_timer, on_draw, 100, 0);
      return;
    }
    fprintf(stderr, "dynamo status: discovery at %s sent no list of instances within %d s\n",
            st->where, SYNC_WAIT_MS / 1000);
    st->code = 1;
    dyn_runtime_stop(st->rt);
    return;
  }
  size_t n = draw(st);
  if (!st->watch) {
    if (!n)
      fprintf(stderr, "dynamo status: no graph found: nothing is served through %s\n",
              st->where);
    st->code = n ? 0 : 1;
    dyn_runtime_stop(st->rt);
  }
}

static void on_poll_timer(uv_timer_t *t) {
  status_t *st = t->data;
  poll_processes(st);
  uv_timer_start(&st->draw_timer, on_draw, DRAW_DELAY_MS, 0);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)signum;
  status_t *st = s->data;
  dyn_runtime_stop(st->rt);
}

static int usage(FILE *f) {
  fprintf(f,
          "usage: dynamo status [--watch] [--control-socket PATH]\n"
          "\n"
          "Prints the graph being served: each service (namespace/component), its\n"
          "instances with their address and process, the requests each has in\n"
          "flight, and for LLM Workers their KV blocks in use and their queue.\n"
          "Without --watch it prints once, after about a second (the Workers\n"
          "publish their load every second), and exits: 0, or 1 when no graph is\n"
          "found. With --watch it redraws every second until interrupted.\n"
          "\n"
          "  -w, --watch                 redraw every second, as top does\n"
          "  --control-socket PATH       the embedded control plane of the graph, as\n"
          "                              given to `dynamo serve --control-socket`\n"
          "                              (default $DYN_CONTROL_SOCKET, else the\n"
          "                              per-user path of `dynamo control`)\n"
          "\n"
          "With ETCD_ENDPOINTS (and NATS_SERVER) set, discovery (and events) are\n"
          "read there, as the graph's workers do.\n");
  return f == stdout ? 0 : 2;
}

int dyn__cmd_status(int argc, char **argv) {
  status_t st = {0};
  dyn_runtime_options_t opts;
  dyn_runtime_options_init(&opts);
  for (int i = 1; i < argc; i++) {
    const char *v;
    int got = dyn__cli_option(argc, argv, &i, "--control-socket", &v);
    if (got < 0) return 2;
    if (got) {
      opts.control_socket = v;
    } else if (!strcmp(argv[i], "--watch") || !strcmp(argv[i], "-w")) {
      st.watch = 1;
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      return usage(stdout);
    } else {
      fprintf(stderr, "dynamo status: unknown option '%s' (try --help)\n", argv[i]);
      return 2;
    }
  }
  if (opts.etcd_endpoints)
    snprintf(st.where, sizeof st.where, "etcd %s", opts.etcd_endpoints);
  else
    snprintf(st.where, sizeof st.where, "%s",
             opts.control_socket ? opts.control_socket : dyn_control_default_path());
  st.tty = isatty(STDOUT_FILENO);

  int rc = dyn_runtime_create(&opts, &st.rt);
  if (rc) {
    fprintf(stderr,
            "dynamo status: no graph found: cannot reach the control plane at %s (%s).\n"
            "Is `dynamo serve` running? Give its --control-socket PATH here, or set\n"
            "$DYN_CONTROL_SOCKET or ETCD_ENDPOINTS as for its workers.\n",
            st.where, dyn_strerror(rc));
    return 1;
  }
  st.loop = dyn_runtime_loop(st.rt);
  st.started_ms = uv_now(st.loop);
  st.code = 0;
  dyn_watch_t *watch = NULL;
  dyn_subscription_t *reports = NULL, *loads = NULL;
  char load_subject[128];
  rc = dyn_discovery_watch(st.rt, "instances/", on_watch, &st, &watch);
  if (!rc) rc = dyn_subscribe(st.rt, DYN_STATUS_REPORT_SUBJECT, on_report, &st, &reports);
  if (!rc) rc = dyn_event_subject("*", "*", "load_metrics", load_subject, sizeof load_subject);
  if (!rc) rc = dyn_subscribe(st.rt, load_subject, on_load, &st, &loads);
  if (rc) {
    fprintf(stderr, "dynamo status: cannot watch %s: %s\n", st.where, dyn_strerror(rc));
    st.code = 1;
  } else {
    uv_timer_init(st.loop, &st.poll_timer);
    uv_timer_init(st.loop, &st.draw_timer);
    st.poll_timer.data = st.draw_timer.data = &st;
    uv_signal_init(st.loop, &st.sigint);
    uv_signal_init(st.loop, &st.sigterm);
    st.sigint.data = st.sigterm.data = &st;
    uv_signal_start(&st.sigint, on_signal, SIGINT);
    uv_signal_start(&st.sigterm, on_signal, SIGTERM);
    /* The subscriptions went out before the poll on the same connection,
     * so the answers cannot overtake them. */
    if (st.watch) {
      uv_timer_start(&st.poll_timer, on_poll_timer, 0, POLL_EVERY_MS);
    } else {
      poll_processes(&st);
      uv_timer_start(&st.draw_timer, on_draw, ONCE_WAIT_MS, 0);
    }
    dyn_runtime_run(st.rt);
    uv_close((uv_handle_t *)&st.poll_timer, NULL);
    uv_close((uv_handle_t *)&st.draw_timer, NULL);
    uv_close((uv_handle_t *)&st.sigint, NULL);
    uv_close((uv_handle_t *)&st.sigterm, NULL);
  }
  dyn_discovery_unwatch(watch);
  dyn_unsubscribe(reports);
  dyn_unsubscribe(loads);
  dyn_runtime_shutdown(st.rt, 0);
  dyn_runtime_destroy(st.rt);
  while (st.ninsts) instance_forget(&st, 0);
  free(st.insts);
  free(st.reports);
  free(st.loads);
  return st.code;
}
