/* server.c - serving endpoints: the listener, inbound connections, requests.
 *
 * One TCP listener per process carries every endpoint it serves. Each
 * accepted connection holds a table of the streams (requests) open on it;
 * a REQUEST frame becomes a dyn_request_t handed to the endpoint's handler
 * on this same loop pass, with the body still in the read buffer.
 */
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/env_names.h"
#include "runtime/internal.h"

typedef struct dyn__sconn {
  struct dyn__sconn *next;
  dyn_runtime_t *rt;
  dyn__conn_t *conn;
  dyn__map_t streams;
} sconn_t;

struct dyn_request {
  sconn_t *sc; /* NULL once the caller is gone or cancelled */
  dyn_runtime_t *rt;
  dyn_endpoint_t *ep;
  uint32_t stream;
  uint32_t deadline_ms;
  uint64_t request_id;
  int cancelled;
  dyn_cancel_fn cancel_fn;
  void *cancel_ud;
  void *data;
  void **drain_ref; /* its entry in a list being cancelled (see take_all) */
};

/* ---- requests ---------------------------------------------------------- */

static void cancel_request(dyn_request_t *r) {
  r->sc = NULL;
  if (r->cancelled) return;
  r->cancelled = 1;
  if (r->cancel_fn) r->cancel_fn(r, r->cancel_ud);
}

static int finish(dyn_request_t *r, uint8_t type, const char *msg) {
  int rc = DYN_OK;
  if (r->ep->m_inflight) {
    dyn_series_add(r->ep->m_inflight, -1);
    if (type == DYN__F_ERROR) dyn_series_add(r->ep->m_errors, 1);
  }
  if (r->drain_ref) *r->drain_ref = NULL; /* the cancelling loop skips it */
  if (r->sc) {
    dyn__map_del(&r->sc->streams, r->stream);
    rc = dyn__conn_send(r->sc->conn, type, 0, r->stream, msg, msg ? strlen(msg) : 0, NULL, 0);
  } else if (r->cancelled) {
    rc = DYN_ECANCELED;
  }
  dyn_runtime_t *rt = r->rt;
  free(r);
  if (--rt->inflight == 0 && rt->draining) dyn__drained(rt);
  return rc;
}

int dyn_request_send(dyn_request_t *r, const void *data, size_t len) {
  if (!r->sc) return r->cancelled ? DYN_ECANCELED : DYN_ECLOSED;
  if (r->ep->m_bytes_out) dyn_series_add(r->ep->m_bytes_out, (double)len);
  return dyn__conn_send(r->sc->conn, DYN__F_DATA, 0, r->stream, data, len, NULL, 0);
}

int dyn_request_sendv(dyn_request_t *r, const void *head, size_t head_len, const void *body,
                      size_t body_len) {
  if (!r->sc) return r->cancelled ? DYN_ECANCELED : DYN_ECLOSED;
  if (r->ep->m_bytes_out) dyn_series_add(r->ep->m_bytes_out, (double)(head_len + body_len));
  return dyn__conn_send(r->sc->conn, DYN__F_DATA, 0, r->stream, head, head_len, body, body_len);
}

int dyn_request_end(dyn_request_t *r) { return finish(r, DYN__F_END, NULL); }

int dyn_request_fail(dyn_request_t *r, const char *message) {
  return finish(r, DYN__F_ERROR, message && *message ? message : "handler failed");
}

void dyn_request_on_cancel(dyn_request_t *r, dyn_cancel_fn fn, void *ud) {
  r->cancel_fn = fn;
  r->cancel_ud = ud;
}
int dyn_request_cancelled(const dyn_request_t *r) { return r->cancelled; }
uint64_t dyn_request_id(const dyn_request_t *r) { return r->request_id; }
uint32_t dyn_request_deadline_ms(const dyn_request_t *r) { return r->deadline_ms; }
dyn_endpoint_t *dyn_request_endpoint(const dyn_request_t *r) { return r->ep; }
void dyn_request_set_data(dyn_request_t *r, void *data) { r->data = data; }
size_t dyn_request_pending(const dyn_request_t *r) {
  return r->sc ? dyn__conn_pending(r->sc->conn) : 0;
}
void *dyn_request_data(const dyn_request_t *r) { return r->data; }

/* ---- inbound frames ---------------------------------------------------- */

static dyn_endpoint_t *find_served(dyn_runtime_t *rt, const char *path, uint16_t len) {
  dyn_endpoint_t *ep = rt->last_ep;
  if (ep && ep->served && ep->path_len == len && !memcmp(ep->path, path, len)) return ep;
  for (ep = rt->served; ep; ep = ep->served_next)
    if (ep->path_len == len && !memcmp(ep->path, path, len)) return rt->last_ep = ep;
  return NULL;
}

static void reject(sconn_t *sc, uint32_t stream, uint8_t flags, const char *fmt,
                   const char *arg, int arglen) {
  char msg[400];
  int n = snprintf(msg, sizeof msg, fmt, arglen, arg);
  dyn__conn_send(sc->conn, DYN__F_ERROR, flags, stream, msg,
                 n > 0 ? ((size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1) : 0, NULL, 0);
}

static void on_request(sconn_t *sc, const dyn__frame_t *f) {
  dyn_runtime_t *rt = sc->rt;
  dyn__request_hdr_t h;
  const char *why;
  if (dyn__request_decode(f, &h, &why)) {
    dyn_log(DYN_LOG_WARN, "closing connection from %s: %s", sc->conn->peer, why);
    dyn__conn_close(sc->conn, DYN_EPROTO, why);
    return;
  }
  if (rt->draining) {
    reject(sc, f->stream, DYN__FL_RETRY, "instance is shutting down (%.*s)", h.path, h.path_len);
    return;
  }
  dyn_endpoint_t *ep = find_served(rt, h.path, h.path_len);
  if (!ep) {
    reject(sc, f->stream, DYN__FL_RETRY, "no endpoint %.*s on this instance", h.path, h.path_len);
    return;
  }
  dyn_request_t *r = calloc(1, sizeof *r);
  if (!r) {
    reject(sc, f->stream, 0, "out of memory%.*s", "", 0);
    return;
  }
  r->sc = sc;
  r->rt = rt;
  r->ep = ep;
  r->stream = f->stream;
  r->deadline_ms = h.deadline_ms;
  r->request_id = h.request_id;
  /* Stream 0 is no stream: the client numbers its streams from 1. */
  int rc = f->stream ? dyn__map_add(&sc->streams, f->stream, r) : DYN_EINVAL;
  if (rc) {
    free(r);
    why = rc == DYN_EEXIST   ? "stream id reused while open"
          : rc == DYN_ENOMEM ? "out of memory for the stream table"
                             : "stream id 0";
    dyn_log(DYN_LOG_WARN, "closing connection from %s: %s", sc->conn->peer, why);
    dyn__conn_close(sc->conn, DYN_EPROTO, why);
    return;
  }
  rt->inflight++;
  if (ep->m_requests) {
    dyn_series_add(ep->m_requests, 1);
    dyn_series_add(ep->m_inflight, 1);
    dyn_series_add(ep->m_bytes_in, (double)h.body_len);
  }
  ep->handler(r, h.body, h.body_len, ep->handler_ud);
}

static void on_sconn_frame(dyn__conn_t *c, const dyn__frame_t *f) {
  sconn_t *sc = c->owner;
  const char *why = NULL;
  if (!c->hello_done) {
    dyn__hello_t h;
    dyn__conn_hello_recv(c, f, DYN__ROLE_SERVER, sc->rt->session, &h);
    return;
  }
  switch (f->type) {
    case DYN__F_REQUEST:
      on_request(sc, f);
      break;
    case DYN__F_CANCEL: {
      dyn_request_t *r = dyn__map_del(&sc->streams, f->stream);
      if (r) cancel_request(r);
      break;
    }
    default:
      why = "unexpected frame type from a caller";
      dyn_log(DYN_LOG_WARN, "closing connection from %s: %s", c->peer, why);
      dyn__conn_close(c, DYN_EPROTO, why);
  }
}

/* Empties a connection's stream table for cancelling. A cancel callback may
 * end other requests of the list (a handler serving them as a batch), so
 * each keeps a pointer to its entry, which finish() clears. */
static void **take_all(sconn_t *sc, size_t *n) {
  void **reqs = dyn__map_drain(&sc->streams, n);
  for (size_t i = 0; i < *n; i++) ((dyn_request_t *)reqs[i])->drain_ref = &reqs[i];
  return reqs;
}

static dyn_request_t *next_taken(void **reqs, size_t i) {
  dyn_request_t *r = reqs[i];
  r->drain_ref = NULL;
  return r;
}

static void on_sconn_close(dyn__conn_t *c, int status, const char *why) {
  sconn_t *sc = c->owner;
  dyn_runtime_t *rt = sc->rt;
  for (sconn_t **pp = &rt->sconns; *pp; pp = &(*pp)->next)
    if (*pp == sc) {
      *pp = sc->next;
      rt->nsconns--;
      break;
    }
  size_t n;
  void **reqs = take_all(sc, &n);
  for (size_t i = 0; i < n; i++)
    if (reqs[i]) cancel_request(next_taken(reqs, i));
  free(reqs);
  dyn__map_free(&sc->streams);
  free(sc);
}

/* ---- the connection cap ----------------------------------------------------
 * Callers pool one connection per instance and keep it while idle, so an
 * idle connection is no sign of abuse and is not timed out. Past max_conns,
 * a new connection makes room by closing the one idle longest (no open
 * stream, nothing half-read, nothing left to write), after a GOAWAY: its
 * caller opens a fresh one at its next request, and retries elsewhere a
 * request that crossed the GOAWAY (nothing of it ran). When every
 * connection is busy the new one is refused with an ERROR frame that says
 * why, which a caller takes as the instance's refusal. */

static dyn__conn_t *longest_idle(dyn_runtime_t *rt, const sconn_t *except) {
  dyn__conn_t *best = NULL;
  for (sconn_t *sc = rt->sconns; sc; sc = sc->next) {
    dyn__conn_t *c = sc->conn;
    if (sc == except || c->closing || !c->connected || sc->streams.n || c->in.len ||
        dyn__conn_pending(c))
      continue;
    if (!best || c->last_read < best->last_read) best = c;
  }
  return best;
}

static void make_room(dyn_runtime_t *rt, sconn_t *sc) {
  char why[160];
  dyn__conn_t *idle = longest_idle(rt, sc);
  if (idle) {
    snprintf(why, sizeof why, "idle longest when connection %u arrived (" DYN_ENV_MAX_CONNS "=%u)",
             rt->nsconns, rt->max_conns);
    dyn_log(DYN_LOG_WARN, "closing connection from %s: %s", idle->peer, why);
    if (idle->hello_done) dyn__conn_send(idle, DYN__F_GOAWAY, 0, 0, NULL, 0, NULL, 0);
    dyn__conn_close(idle, DYN_ECLOSED, why);
    return;
  }
  snprintf(why, sizeof why,
           "too many connections: %u open, none idle (" DYN_ENV_MAX_CONNS "=%u)",
           rt->nsconns - 1, rt->max_conns);
  dyn_log(DYN_LOG_WARN, "refusing connection from %s: %s", sc->conn->peer, why);
  dyn__conn_send(sc->conn, DYN__F_ERROR, 0, 0, why, strlen(why), NULL, 0);
  dyn__conn_close(sc->conn, DYN_ECLOSED, why);
}

static void on_connection(uv_stream_t *server, int status) {
  dyn_runtime_t *rt = server->data;
  if (status < 0) {
    dyn_log(DYN_LOG_WARN, "accept failed: %s", uv_strerror(status));
    return;
  }
  sconn_t *sc = calloc(1, sizeof *sc);
  if (!sc) return;
  sc->rt = rt;
  dyn__map_init(&sc->streams);
  sc->conn = dyn__conn_new(rt->loop, &rt->flusher, 0, rt->max_frame,
                           on_sconn_frame, on_sconn_close, sc);
  if (!sc->conn) {
    free(sc);
    return;
  }
  dyn__conn_set_budget(sc->conn, &rt->inbudget);
  sc->next = rt->sconns;
  rt->sconns = sc;
  rt->nsconns++;
  if (uv_accept(server, &sc->conn->h.stream) || dyn__conn_start(sc->conn))
    dyn__conn_close(sc->conn, DYN_ESYS, "accept");
  else if (rt->nsconns > rt->max_conns)
    make_room(rt, sc);
}

/* ---- stalled callers ------------------------------------------------------
 * A caller that connects and never says HELLO, or sends a frame slowly on
 * purpose, would hold its connection and buffer for as long as it likes:
 * TCP keepalive only catches peers that are gone, not peers that trickle.
 * So every frame has a deadline from its first byte: max(stall_ms, its
 * size / min_frame_rate), the size read from its header (stall_ms alone
 * until the header is in); the HELLO must come within stall_ms of the
 * connect. A byte now and then does not move the deadline. A sweep every
 * stall_ms / 4 closes the connections past theirs. A caller idle between
 * frames is fine (the connection cap deals with too many of those). */

static uint64_t frame_deadline_ms(const dyn_runtime_t *rt, const dyn__conn_t *c) {
  uint64_t ms = rt->stall_ms;
  if (c->in.len >= DYN__FRAME_HDR) {
    uint64_t size = (uint64_t)dyn__get_u32(c->in.data) + DYN__FRAME_HDR;
    uint64_t need = size * 1000 / rt->min_frame_rate;
    if (need > ms) ms = need;
  }
  return ms;
}

static void on_sweep(uv_timer_t *t) {
  dyn_runtime_t *rt = t->data;
  uint64_t now = uv_now(rt->loop);
  for (sconn_t *sc = rt->sconns, *next; sc; sc = next) {
    next = sc->next;
    dyn__conn_t *c = sc->conn;
    if (c->closing || !c->connected) continue;
    char why[200];
    if (!c->hello_done && now - c->opened >= rt->stall_ms) {
      snprintf(why, sizeof why, "no HELLO in time (" DYN_ENV_STALL_MS "=%u)", rt->stall_ms);
    } else if (c->in.len && now - c->frame_started >= frame_deadline_ms(rt, c)) {
      if (c->in.len >= DYN__FRAME_HDR)
        snprintf(why, sizeof why,
                 "stalled in the middle of a frame: %zu of its %" PRIu64 " bytes in %" PRIu64
                 " ms (it had %" PRIu64 " ms: " DYN_ENV_STALL_MS "=%u, " DYN_ENV_MIN_FRAME_RATE
                 "=%" PRIu32 ")",
                 c->in.len, (uint64_t)dyn__get_u32(c->in.data) + DYN__FRAME_HDR,
                 now - c->frame_started, frame_deadline_ms(rt, c), rt->stall_ms,
                 rt->min_frame_rate);
      else
        snprintf(why, sizeof why,
                 "stalled in the middle of a frame: %zu bytes of its header in %" PRIu64
                 " ms (" DYN_ENV_STALL_MS "=%u)",
                 c->in.len, now - c->frame_started, rt->stall_ms);
    } else {
      continue;
    }
    dyn_log(DYN_LOG_WARN, "closing connection from %s: %s", c->peer, why);
    dyn__conn_close(c, DYN_EPROTO, why);
  }
#ifdef __GLIBC__
  /* Big read buffers were given back: return their pages to the system.
   * glibc keeps freed memory in its heap for reuse otherwise, so a burst
   * of big frames would leave the worker at its peak for good. Here, off
   * the read path and at most once a sweep, the walk costs nothing. */
  if (rt->inbudget.freed_big) {
    rt->inbudget.freed_big = 0;
    malloc_trim(0);
  }
#endif
}

static void start_sweep(dyn_runtime_t *rt) {
  if (rt->sweep_ready) return;
  uv_timer_init(rt->loop, &rt->sweep);
  rt->sweep.data = rt;
  uv_unref((uv_handle_t *)&rt->sweep);
  unsigned every = rt->stall_ms / 4 ? rt->stall_ms / 4 : 1;
  uv_timer_start(&rt->sweep, on_sweep, every, every);
  rt->sweep_ready = 1;
}

void dyn__server_stop_sweep(dyn_runtime_t *rt) {
  if (!rt->sweep_ready) return;
  uv_close((uv_handle_t *)&rt->sweep, NULL);
  rt->sweep_ready = 0;
}

/* ---- listener and registration ----------------------------------------- */

static int start_listener(dyn_runtime_t *rt) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (uv_ip4_addr(rt->listen_host, rt->listen_port, (struct sockaddr_in *)&ss) &&
      uv_ip6_addr(rt->listen_host, rt->listen_port, (struct sockaddr_in6 *)&ss)) {
    dyn_log(DYN_LOG_ERROR, "listen host is not an IP address: %s", rt->listen_host);
    return DYN_EINVAL;
  }
  uv_tcp_init(rt->loop, &rt->listener);
  rt->listener.data = rt;
  int rc = uv_tcp_bind(&rt->listener, (struct sockaddr *)&ss, 0);
  if (!rc) rc = uv_listen((uv_stream_t *)&rt->listener, 511, on_connection);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "cannot listen on %s:%d: %s", rt->listen_host,
            rt->listen_port, uv_strerror(rc));
    uv_close((uv_handle_t *)&rt->listener, NULL);
    return DYN_ESYS;
  }
  int len = sizeof ss;
  uv_tcp_getsockname(&rt->listener, (struct sockaddr *)&ss, &len);
  int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  const char *host = rt->advertise_host ? rt->advertise_host : rt->listen_host;
  if (strchr(host, ':'))
    snprintf(rt->address, sizeof rt->address, "[%s]:%d", host, port);
  else
    snprintf(rt->address, sizeof rt->address, "%s:%d", host, port);
  rt->listening = 1;
  start_sweep(rt);
  return DYN_OK;
}

static int register_instance(dyn_runtime_t *rt, dyn_endpoint_t *ep) {
  dyn_component_t *c = ep->component;
  /* Key sizes are bounded by the name limits; a failure here is a bug. */
  int n = dyn_instance_prefix(c->ns->name, c->name, ep->name, ep->key, sizeof ep->key);
  size_t used = strlen(ep->key);
  if (n || sizeof ep->key - used < 17) return DYN_EINVAL;
  snprintf(ep->key + used, sizeof ep->key - used, "%" PRIx64, rt->session);
  char id[24];
  snprintf(id, sizeof id, "%" PRIu64, rt->session);
  json_t *v = json_pack("{s:s, s:s, s:s}", "address", rt->address, "instance_id", id,
                        "endpoint", ep->path);
  char *value = v ? json_dumps(v, JSON_COMPACT) : NULL;
  json_decref(v);
  if (!value) return DYN_ENOMEM;
  int rc = dyn_discovery_put(rt, ep->key, value);
  free(value);
  return rc;
}

int dyn_endpoint_serve(dyn_endpoint_t *ep, dyn_handler_fn fn, void *ud) {
  dyn_runtime_t *rt = dyn_endpoint_runtime(ep);
  if (!fn) return DYN_EINVAL;
  if (ep->served) return DYN_EEXIST;
  if (rt->draining || !rt->disc) return DYN_ECLOSED;
  if (!rt->listening) {
    int rc = start_listener(rt);
    if (rc) return rc;
  }
  ep->handler = fn;
  ep->handler_ud = ud;
  ep->served = 1;
  dyn__endpoint_metrics_init(ep);
  ep->served_next = rt->served;
  rt->served = ep;
  int rc = register_instance(rt, ep);
  if (rc) dyn_endpoint_unserve(ep);
  return rc;
}

int dyn_endpoint_unserve(dyn_endpoint_t *ep) {
  dyn_runtime_t *rt = dyn_endpoint_runtime(ep);
  if (!ep->served) return DYN_ENOTFOUND;
  for (dyn_endpoint_t **pp = &rt->served; *pp; pp = &(*pp)->served_next)
    if (*pp == ep) {
      *pp = ep->served_next;
      break;
    }
  ep->served = 0;
  ep->served_next = NULL;
  if (rt->last_ep == ep) rt->last_ep = NULL;
  if (rt->disc && ep->key[0]) dyn_discovery_delete(rt, ep->key);
  return DYN_OK;
}

void dyn__server_reregister_all(dyn_runtime_t *rt) {
  for (dyn_endpoint_t *ep = rt->served; ep; ep = ep->served_next) {
    if (ep->key[0]) dyn_discovery_delete(rt, ep->key);
    if (register_instance(rt, ep))
      dyn_log(DYN_LOG_ERROR, "cannot register %s again", ep->path);
  }
}

void dyn__server_deregister_all(dyn_runtime_t *rt) {
  while (rt->served) dyn_endpoint_unserve(rt->served);
}

size_t dyn__server_cancel_all(dyn_runtime_t *rt) {
  size_t total = 0;
  for (sconn_t *sc = rt->sconns; sc; sc = sc->next) {
    size_t n;
    void **reqs = take_all(sc, &n);
    for (size_t i = 0; i < n; i++) {
      if (!reqs[i]) continue;
      dyn_request_t *r = next_taken(reqs, i);
      /* Tell the caller, then tell the handler. */
      const char *msg = "instance shut down before the request finished";
      dyn__conn_send(sc->conn, DYN__F_ERROR, DYN__FL_GONE, r->stream, msg, strlen(msg), NULL, 0);
      cancel_request(r);
      total++;
    }
    free(reqs);
  }
  return total;
}

void dyn__server_goaway(dyn_runtime_t *rt) {
  for (sconn_t *sc = rt->sconns; sc; sc = sc->next)
    if (sc->conn->hello_done) dyn__conn_send(sc->conn, DYN__F_GOAWAY, 0, 0, NULL, 0, NULL, 0);
}

void dyn__server_close(dyn_runtime_t *rt) {
  if (rt->listening) {
    uv_close((uv_handle_t *)&rt->listener, NULL);
    rt->listening = 0;
  }
}

void dyn__server_close_conns(dyn_runtime_t *rt) {
  /* Close after the queued responses (END, ERROR) went out. */
  for (sconn_t *sc = rt->sconns, *next; sc; sc = next) {
    next = sc->next;
    dyn__conn_close_flushed(sc->conn, DYN_ECLOSED, "instance shutting down");
  }
}
