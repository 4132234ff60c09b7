/* runtime.c - the runtime's lifecycle: options, loop, backends, shutdown. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env_names.h"
#include "dynamo/control.h"
#include "runtime/etcd/etcd.h"
#include "runtime/internal.h"

static const char *env_or(const char *name, const char *dflt) {
  const char *v = getenv(name);
  return v && *v ? v : dflt;
}

/* A positive count from the environment, or 0 (the default) when unset.
 * A value that is not one is named in a warning rather than taken as 0 or
 * as its leading digits, which would quietly lift or tighten a limit. */
static unsigned long long env_count(const char *name, unsigned long long max) {
  const char *v = getenv(name);
  if (!v || !*v) return 0;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || *end || v[0] == '-' || n == 0 || n > max) {
    dyn_log(DYN_LOG_WARN, "%s=%s is not a count from 1 to %llu; using the default", name,
            v, max);
    return 0;
  }
  return n;
}

void dyn_runtime_options_init(dyn_runtime_options_t *o) {
  memset(o, 0, sizeof *o);
  o->control_socket = env_or(DYN_ENV_CONTROL_SOCKET, NULL);
  o->etcd_endpoints = env_or(DYN_ENV_ETCD_ENDPOINTS, NULL);
  o->nats_url = env_or(DYN_ENV_NATS_SERVER, NULL);
  /* Loopback only while discovery is local to this machine. */
  o->listen_host = env_or(DYN_ENV_LISTEN_HOST, o->etcd_endpoints ? "0.0.0.0" : "127.0.0.1");
  o->listen_port = atoi(env_or(DYN_ENV_LISTEN_PORT, "0"));
  o->advertise_host = env_or(DYN_ENV_ADVERTISE_HOST, NULL);
  long mf = atol(env_or(DYN_ENV_MAX_FRAME, "0"));
  o->max_frame = mf > 0 ? (uint32_t)mf : DYN_DEFAULT_MAX_FRAME;
  o->max_conns = (unsigned)env_count(DYN_ENV_MAX_CONNS, UINT_MAX);
  o->max_buffered = (size_t)env_count(DYN_ENV_MAX_BUFFERED, SIZE_MAX);
  o->max_peer_buffered = (size_t)env_count(DYN_ENV_MAX_PEER_BUFFERED, SIZE_MAX);
  o->min_frame_rate = (uint32_t)env_count(DYN_ENV_MIN_FRAME_RATE, UINT32_MAX);
  o->stall_ms = (unsigned)env_count(DYN_ENV_STALL_MS, UINT_MAX);
}


/* What callers on other machines can reach when we listen on a wildcard
 * address: the first non-loopback IPv4 address, else loopback. */
static char *guess_advertise_host(const char *listen_host) {
  if (strcmp(listen_host, "0.0.0.0") && strcmp(listen_host, "::")) return strdup(listen_host);
  uv_interface_address_t *ifs;
  int n;
  char ip[INET6_ADDRSTRLEN] = "127.0.0.1";
  if (uv_interface_addresses(&ifs, &n) == 0) {
    for (int i = 0; i < n; i++)
      if (!ifs[i].is_internal && ifs[i].address.address4.sin_family == AF_INET) {
        uv_ip4_name(&ifs[i].address.address4, ip, sizeof ip);
        break;
      }
    uv_free_interface_addresses(ifs, n);
  }
  return strdup(ip);
}

/* etcd refused to give our lease back after an outage: the instances move
 * to the new session id. */
static void on_etcd_session(void *ud, uint64_t old_id, uint64_t new_id) {
  dyn_runtime_t *rt = ud;
  (void)old_id;
  rt->session = new_id;
  dyn__server_reregister_all(rt);
}

/* Discovery and events each come from etcd / NATS when configured, else
 * from the embedded control plane; the embedded session is opened once
 * and shared when both use it. */
static int open_backends(dyn_runtime_t *rt, const dyn_runtime_options_t *o) {
  int rc = DYN_OK;
  if (!o->etcd_endpoints || !o->nats_url) {
    rc = dyn__embedded_open(rt, rt->control_socket, &rt->emb_state);
    if (rc) return rc;
  }
  if (o->etcd_endpoints) {
    rc = dyn__etcd_open(rt, o->etcd_endpoints, &rt->disc_state);
    if (rc) return rc;
    rt->disc = &dyn__etcd_discovery;
    dyn__etcd_set_session_hook(rt->disc_state, on_etcd_session, rt);
  } else {
    rt->disc = &dyn__embedded_discovery;
    rt->disc_state = rt->emb_state;
  }
  if (o->nats_url) {
    rc = dyn__nats_open(rt, o->nats_url, &rt->ev_state);
    if (rc) return rc;
    rt->ev = &dyn__nats_events;
  } else {
    rt->ev = &dyn__embedded_events;
    rt->ev_state = rt->emb_state;
  }
  return DYN_OK;
}

static void close_backends(dyn_runtime_t *rt) {
  if (rt->disc) rt->disc->close(rt->disc_state);
  if (rt->ev && rt->ev != &dyn__embedded_events) rt->ev->close(rt->ev_state);
  if (rt->emb_state && rt->disc != &dyn__embedded_discovery)
    dyn__embedded_discovery.close(rt->emb_state);
  rt->disc = NULL;
  rt->ev = NULL;
  rt->emb_state = NULL;
}

int dyn_runtime_create(const dyn_runtime_options_t *opts, dyn_runtime_t **out) {
  dyn_runtime_options_t dflt;
  if (!opts) {
    dyn_runtime_options_init(&dflt);
    opts = &dflt;
  }
  dyn_runtime_t *rt = calloc(1, sizeof *rt);
  if (!rt) return DYN_ENOMEM;
  if (opts->loop) {
    rt->loop = opts->loop;
  } else {
    if (uv_loop_init(&rt->own_loop)) {
      free(rt);
      return DYN_ESYS;
    }
    rt->loop = &rt->own_loop;
    rt->owns_loop = 1;
  }
  const char *cs = opts->control_socket ? opts->control_socket : dyn_control_default_path();
  rt->control_socket = strdup(cs);
  rt->listen_host = strdup(opts->listen_host ? opts->listen_host : "127.0.0.1");
  rt->advertise_host = opts->advertise_host ? strdup(opts->advertise_host)
                                            : guess_advertise_host(rt->listen_host);
  rt->listen_port = opts->listen_port;
  rt->max_frame = opts->max_frame ? opts->max_frame : DYN_DEFAULT_MAX_FRAME;
  rt->max_conns = opts->max_conns ? opts->max_conns : DYN_DEFAULT_MAX_CONNS;
  rt->min_frame_rate = opts->min_frame_rate ? opts->min_frame_rate : DYN_DEFAULT_MIN_FRAME_RATE;
  rt->stall_ms = opts->stall_ms ? opts->stall_ms : DYN_DEFAULT_STALL_MS;
  rt->inbudget.total = opts->max_buffered ? opts->max_buffered : DYN_DEFAULT_MAX_BUFFERED;
  rt->inbudget.per_conn = opts->max_peer_buffered ? opts->max_peer_buffered
                                                  : (size_t)rt->max_frame + DYN__FRAME_HDR;
  uint64_t seed = 0;
  uv_random(NULL, NULL, &seed, sizeof seed, 0, NULL);
  rt->next_request_id = seed & 0x7fffffffffffffffull;
  dyn__flusher_init(&rt->flusher, rt->loop);
  /* A peer that vanishes mid-write must fail that connection, not kill the
   * process: libuv writes to sockets with plain write(). */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);

  int rc = open_backends(rt, opts);
  if (rc) {
    dyn_runtime_destroy(rt);
    return rc;
  }
  rt->session = rt->disc->session_id(rt->disc_state);
  rc = dyn__status_report_start(rt);
  if (rc) {
    dyn_runtime_destroy(rt);
    return rc;
  }
  *out = rt;
  return DYN_OK;
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void dyn_runtime_destroy(dyn_runtime_t *rt) {
  if (!rt) return;
  dyn__server_cancel_all(rt);
  dyn__server_close(rt);
  dyn__server_close_conns(rt);
  dyn__peers_close(rt);
  close_backends(rt);
  dyn__server_stop_sweep(rt);
  dyn__flusher_close(&rt->flusher);
  if (rt->sync_timer_ready) uv_close((uv_handle_t *)&rt->sync_timer, NULL);
  /* Let every close callback run so no memory outlives the runtime. */
  uv_run(rt->loop, UV_RUN_NOWAIT);
  uv_run(rt->loop, UV_RUN_NOWAIT);
  if (rt->owns_loop) {
    uv_walk(rt->loop, close_walk, NULL);
    uv_run(rt->loop, UV_RUN_DEFAULT);
    uv_loop_close(rt->loop);
  }
  dyn__names_free(rt);
  dyn__suspects_free(rt);
  free(rt->control_socket);
  free(rt->listen_host);
  free(rt->advertise_host);
  free(rt);
}

uint64_t dyn_runtime_instance_id(const dyn_runtime_t *rt) { return rt->session; }
uv_loop_t *dyn_runtime_loop(dyn_runtime_t *rt) { return rt->loop; }
size_t dyn_runtime_inflight(const dyn_runtime_t *rt) { return rt->inflight; }
int dyn_runtime_draining(const dyn_runtime_t *rt) { return rt->draining; }

void dyn_runtime_hold(dyn_runtime_t *rt) { rt->inflight++; }

void dyn_runtime_release(dyn_runtime_t *rt) {
  if (rt->inflight > 0 && --rt->inflight == 0 && rt->draining) dyn__drained(rt);
}
const char *dyn_runtime_address(const dyn_runtime_t *rt) { return rt->address; }

/* Our uv_run calls go through here so that the runtime knows when it is
 * being called from inside its own loop. */
static int run(dyn_runtime_t *rt, uv_run_mode mode) {
  rt->in_loop++;
  int alive = uv_run(rt->loop, mode);
  rt->in_loop--;
  return alive;
}

int dyn_runtime_run(dyn_runtime_t *rt) {
  rt->stopping = 0;
  while (!rt->stopping) {
    if (!run(rt, UV_RUN_ONCE) && !rt->stopping) {
      /* Nothing is alive any more: nothing can wake us. */
      break;
    }
  }
  dyn__flusher_run(&rt->flusher);
  return DYN_OK;
}

void dyn__run_once(dyn_runtime_t *rt) { run(rt, UV_RUN_ONCE); }

int dyn_runtime_registered(const dyn_runtime_t *rt) {
  return rt->disc && rt->disc->registered(rt->disc_state);
}

int dyn_runtime_poll(dyn_runtime_t *rt) {
  run(rt, UV_RUN_NOWAIT);
  dyn__flusher_run(&rt->flusher);
  return DYN_OK;
}

int dyn_runtime_backend_fd(dyn_runtime_t *rt) { return uv_backend_fd(rt->loop); }
int dyn_runtime_backend_timeout(dyn_runtime_t *rt) { return uv_backend_timeout(rt->loop); }
void dyn_runtime_flush(dyn_runtime_t *rt) { dyn__flusher_run(&rt->flusher); }
void dyn_runtime_stop(dyn_runtime_t *rt) {
  rt->stopping = 1;
  uv_stop(rt->loop);
}

int dyn_runtime_drain(dyn_runtime_t *rt) {
  if (rt->draining) return DYN_OK;
  rt->draining = 1;
  dyn__server_deregister_all(rt);
  dyn__server_close(rt);
  dyn__server_goaway(rt);
  return DYN_OK;
}

/* Shutdown is driven by the loop: it ends when the last in-flight request
 * finishes (dyn__drained) or when the grace timer fires, whichever comes
 * first. That works the same whether dyn_runtime_shutdown was called from
 * outside the loop (it then runs the loop itself) or from one of the loop's
 * callbacks, such as a signal handler (dyn_runtime_run then returns). */
static void shutdown_finish(dyn_runtime_t *rt) {
  if (rt->shutdown_done) return;
  rt->shutdown_done = 1;
  uv_close((uv_handle_t *)&rt->grace, NULL);
  uv_close((uv_handle_t *)&rt->drained, NULL);
  size_t cancelled = dyn__server_cancel_all(rt);
  if (cancelled)
    dyn_log(DYN_LOG_WARN, "shutdown: %zu request(s) still running at the end of the grace period were cancelled",
            cancelled);
  rt->shutdown_cancelled = cancelled;
  dyn__server_close_conns(rt);
  dyn__flusher_run(&rt->flusher);
  dyn__peers_close(rt);
  close_backends(rt);
  dyn_runtime_stop(rt);
}

static void on_grace(uv_timer_t *t) { shutdown_finish(t->data); }
static void on_drained(uv_idle_t *i) { shutdown_finish(i->data); }

/* An idle handle rather than a direct call: the last request may end deep
 * inside a handler, which must return before connections are torn down. */
void dyn__drained(dyn_runtime_t *rt) {
  if (rt->shutdown_started && !rt->shutdown_done) uv_idle_start(&rt->drained, on_drained);
}

int dyn_runtime_shutdown(dyn_runtime_t *rt, int grace_ms) {
  if (!rt->shutdown_started) {
    rt->shutdown_started = 1;
    dyn_runtime_drain(rt);
    uv_timer_init(rt->loop, &rt->grace);
    uv_idle_init(rt->loop, &rt->drained);
    rt->grace.data = rt->drained.data = rt;
    uv_timer_start(&rt->grace, on_grace, grace_ms > 0 ? (uint64_t)grace_ms : 0, 0);
    if (!rt->inflight) dyn__drained(rt);
  }
  if (rt->in_loop) return DYN_OK; /* completes once we return to the loop */
  while (!rt->shutdown_done) run(rt, UV_RUN_ONCE);
  run(rt, UV_RUN_NOWAIT); /* let the close callbacks run */
  return (int)rt->shutdown_cancelled;
}

typedef struct work {
  uv_work_t req;
  void (*fn)(void *);
  void (*done)(void *, int);
  void *arg;
} work_t;

static void work_run(uv_work_t *r) {
  work_t *w = r->data;
  w->fn(w->arg);
}

static void work_done(uv_work_t *r, int status) {
  work_t *w = r->data;
  if (w->done) w->done(w->arg, status ? DYN_ECANCELED : DYN_OK);
  free(w);
}

int dyn_runtime_queue_work(dyn_runtime_t *rt, void (*fn)(void *),
                           void (*done)(void *, int), void *arg) {
  work_t *w = calloc(1, sizeof *w);
  if (!w) return DYN_ENOMEM;
  w->fn = fn;
  w->done = done;
  w->arg = arg;
  w->req.data = w;
  if (uv_queue_work(rt->loop, &w->req, work_run, work_done)) {
    free(w);
    return DYN_ESYS;
  }
  return DYN_OK;
}
