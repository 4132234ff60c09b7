/* client.c - the caller's side: live instance lists, routing, streams.
 *
 * A client mirrors one endpoint's instances from a discovery watch. Each
 * request picks an instance (random, round robin or direct), finds or opens
 * the one pooled connection to that instance's process (a "peer"), and
 * writes a REQUEST frame on a fresh stream id. Responses find their stream
 * through the peer's id table.
 *
 * The request body is kept until the first response arrives, because until
 * then the request may have to be sent again: when the stream waits for an
 * instance or a connection, when the connection fails before the
 * instance's HELLO, when a draining instance answers with a retryable
 * error, or when it said GOAWAY and closed before answering. A connection
 * that failed before the instance's HELLO came back carried no response of
 * any kind (the HELLO precedes them on the wire), so its streams are routed
 * again to an instance not yet tried.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/rand.h"
#include "runtime/internal.h"

#define MAX_TRIES 4

typedef struct inst {
  uint64_t id;
  char addr[96];
} inst_t;

struct dyn__peer {
  dyn__peer_t *next;
  dyn_runtime_t *rt;
  dyn__conn_t *conn;
  dyn__map_t streams;
  uint32_t next_stream;
  int ready;  /* the instance's HELLO arrived */
  int goaway; /* the instance is draining: no new streams here */
  char addr[96];
};

enum { S_PENDING = 1, S_SENT = 2, S_DONE = 3 };

struct dyn_stream {
  dyn_client_t *c;
  dyn_stream_t *prev, *next; /* c->open */
  dyn__peer_t *peer;
  uint32_t sid;
  int state;
  uint64_t instance;
  dyn_stream_callbacks_t cb;
  void *ud;
  dyn_call_options_t opt;
  uint64_t started; /* loop time, ms */
  uint8_t *body;    /* kept while it may have to be sent again */
  size_t body_len;
  uint64_t tried[MAX_TRIES];
  int ntried;
  uv_timer_t *timer;
  void **drain_ref; /* its entry in a dying peer's list (on_peer_close) */
  /* Inside dyn_client_generate: an end found there (no instance, no
   * memory) is held and reported from the loop, because the caller does
   * not know the stream yet (client.h: failures arrive through on_done). */
  int in_generate;
  int deferred_status; /* non-zero: finish with it when the timer fires */
  char *deferred_msg;
};

struct dyn_client {
  dyn_runtime_t *rt;
  dyn_endpoint_t *ep;
  dyn_watch_t *watch;
  int synced;
  inst_t *inst;
  size_t n, cap;
  uint32_t rr;
  uint64_t rng;
  int wait_ms;
  size_t prefix_len;
  dyn_stream_t *open;
  dyn_instances_fn on_change;
  void *on_change_ud;
};

static void dispatch(dyn_stream_t *s, const void *body, size_t len);
static void retry_elsewhere(dyn_stream_t *s, const char *why);

/* ---- finishing --------------------------------------------------------- */

static void free_timer(uv_handle_t *h) { free(h); }

static int arm_timer(dyn_stream_t *s, uint64_t ms);

static void finish(dyn_stream_t *s, int status, const char *msg) {
  if (s->state == S_DONE) return;
  if (s->in_generate && !s->deferred_status) {
    s->deferred_status = status;
    s->deferred_msg = strdup(msg ? msg : dyn_strerror(status));
    if (!arm_timer(s, 0)) return;
    /* No timer: finish now after all; the caller's stream pointer is then
     * dead on return, which only happens when memory ran out. */
  }
  s->state = S_DONE;
  if (s->drain_ref) *s->drain_ref = NULL; /* on_peer_close skips it */
  if (s->peer && s->sid) dyn__map_del(&s->peer->streams, s->sid);
  dyn_client_t *c = s->c;
  if (s->prev) s->prev->next = s->next;
  else c->open = s->next;
  if (s->next) s->next->prev = s->prev;
  if (s->timer) uv_close((uv_handle_t *)s->timer, free_timer);
  if (s->cb.on_done) s->cb.on_done(s, status, msg ? msg : dyn_strerror(status), s->ud);
  free(s->body);
  free(s->deferred_msg);
  free(s);
}

static void send_cancel(dyn_stream_t *s) {
  if (s->state == S_SENT && s->peer)
    dyn__conn_send(s->peer->conn, DYN__F_CANCEL, 0, s->sid, NULL, 0, NULL, 0);
}

void dyn_stream_cancel(dyn_stream_t *s) {
  send_cancel(s);
  finish(s, DYN_ECANCELED, "cancelled by the caller");
}

uint64_t dyn_stream_instance_id(const dyn_stream_t *s) { return s->instance; }

/* ---- peers ------------------------------------------------------------- */

static void suspect_add(dyn_runtime_t *rt, const char *addr);
static void suspect_clear(dyn_runtime_t *rt, const char *addr);

static void on_peer_frame(dyn__conn_t *conn, const dyn__frame_t *f) {
  dyn__peer_t *p = conn->owner;
  const char *why = NULL;
  if (!conn->hello_done) {
    dyn__hello_t h;
    if (dyn__conn_hello_recv(conn, f, DYN__ROLE_CLIENT, p->rt->session, &h)) return;
    p->ready = 1;
    if (p->rt->suspects) suspect_clear(p->rt, p->addr);
    return;
  }
  if (f->type == DYN__F_GOAWAY) {
    /* Later requests to this address open a fresh connection. */
    p->goaway = 1;
    for (dyn__peer_t **pp = &p->rt->peers; *pp; pp = &(*pp)->next)
      if (*pp == p) {
        *pp = p->next;
        break;
      }
    return;
  }
  dyn_stream_t *s = dyn__map_get(&p->streams, f->stream);
  if (s && s->body) {
    /* The first answer: the request ran (or was refused on purpose). */
    if (f->type == DYN__F_ERROR && (f->flags & DYN__FL_RETRY)) {
      retry_elsewhere(s, "the instance refused the request");
      return;
    }
    free(s->body);
    s->body = NULL;
  }
  switch (f->type) {
    case DYN__F_DATA:
      if (s && s->cb.on_data) s->cb.on_data(s, f->payload, f->len, s->ud);
      break;
    case DYN__F_END:
      if (s) finish(s, DYN_OK, NULL);
      break;
    case DYN__F_ERROR:
      if (s) {
        char msg[512];
        size_t n = f->len < sizeof msg - 1 ? f->len : sizeof msg - 1;
        memcpy(msg, f->payload, n);
        msg[n] = 0;
        finish(s, f->flags & DYN__FL_GONE ? DYN_EDISCONNECTED : DYN_EREMOTE, msg);
      }
      break;
    default:
      why = "unexpected frame type from an instance";
      dyn_log(DYN_LOG_WARN, "closing connection to %s: %s", conn->peer, why);
      dyn__conn_close(conn, DYN_EPROTO, why);
  }
}

static void on_peer_close(dyn__conn_t *conn, int status, const char *why) {
  dyn__peer_t *p = conn->owner;
  dyn_runtime_t *rt = p->rt;
  for (dyn__peer_t **pp = &rt->peers; *pp; pp = &(*pp)->next)
    if (*pp == p) { /* not there after a GOAWAY */
      *pp = p->next;
      break;
    }
  /* Not just a refused connect: a dying process's listener may still take
   * the TCP handshake and then reset it, before its HELLO ever came. */
  int unanswered_are_safe = !p->ready || p->goaway;
  /* Lost, not closed by us or drained: stop choosing it now, not when its
   * registration expires. */
  if (!p->goaway && status != DYN_ECLOSED) suspect_add(rt, p->addr);
  size_t n;
  void **streams = dyn__map_drain(&p->streams, &n);
  /* Callbacks below may end other streams of this list (on_done cancels a
   * sibling, or frees the client): finish() clears their entries. */
  for (size_t i = 0; i < n; i++) ((dyn_stream_t *)streams[i])->drain_ref = &streams[i];
  for (size_t i = 0; i < n; i++) {
    dyn_stream_t *s = streams[i];
    if (!s) continue;
    s->drain_ref = NULL;
    s->peer = NULL;
    s->sid = 0;
    if (unanswered_are_safe && s->body) {
      /* Nothing of it ran: try another instance. */
      dyn_log(DYN_LOG_INFO, "%s closed (%s) before answering; routing elsewhere", p->addr,
              why ? why : dyn_strerror(status));
      s->state = S_PENDING;
      dispatch(s, s->body, s->body_len);
      continue;
    }
    char msg[300];
    snprintf(msg, sizeof msg, "instance %" PRIx64 " at %s disconnected: %s", s->instance,
             p->addr, why ? why : dyn_strerror(status));
    finish(s, DYN_EDISCONNECTED, msg);
  }
  free(streams);
  dyn__map_free(&p->streams);
  free(p);
}

static dyn__peer_t *get_peer(dyn_runtime_t *rt, const char *addr) {
  for (dyn__peer_t *p = rt->peers; p; p = p->next)
    if (!strcmp(p->addr, addr)) return p;
  dyn__peer_t *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->rt = rt;
  snprintf(p->addr, sizeof p->addr, "%s", addr);
  dyn__map_init(&p->streams);
  p->conn = dyn__conn_new(rt->loop, &rt->flusher, 0, rt->max_frame, on_peer_frame,
                          on_peer_close, p);
  if (!p->conn) {
    free(p);
    return NULL;
  }
  dyn__conn_hello(p->conn, DYN__ROLE_CLIENT, rt->session);
  p->next = rt->peers;
  rt->peers = p;
  if (dyn__conn_connect(p->conn, addr)) {
    dyn__conn_close(p->conn, DYN_ECONNECT, "bad instance address");
    return NULL;
  }
  return p;
}

void dyn__peers_close(dyn_runtime_t *rt) {
  while (rt->peers) dyn__conn_close(rt->peers->conn, DYN_ECLOSED, "runtime closing");
}

/* ---- suspects ------------------------------------------------------------
 * A worker that dies takes its connections with it at once, while its
 * registration may linger until its lease expires (etcd: up to the TTL).
 * Callers should stop choosing it at whichever comes first, so an address
 * whose connection failed is "suspect": left out of routing and of the
 * live list until it registers again, a new connection to it succeeds, or
 * SUSPECT_MS pass (a transient failure must not exclude it for good). */

#define SUSPECT_MS 30000

struct dyn__suspect {
  struct dyn__suspect *next;
  uint64_t since;
  char addr[96];
};

static void suspect_clear(dyn_runtime_t *rt, const char *addr) {
  for (struct dyn__suspect **pp = &rt->suspects; *pp; pp = &(*pp)->next)
    if (!strcmp((*pp)->addr, addr)) {
      struct dyn__suspect *x = *pp;
      *pp = x->next;
      free(x);
      return;
    }
}

static void suspect_add(dyn_runtime_t *rt, const char *addr) {
  suspect_clear(rt, addr);
  struct dyn__suspect *x = calloc(1, sizeof *x);
  if (!x) return;
  x->since = uv_now(rt->loop);
  snprintf(x->addr, sizeof x->addr, "%s", addr);
  x->next = rt->suspects;
  rt->suspects = x;
}

static int suspect(dyn_runtime_t *rt, const char *addr) {
  uint64_t now = uv_now(rt->loop);
  for (struct dyn__suspect **pp = &rt->suspects; *pp;) {
    struct dyn__suspect *x = *pp;
    if (now - x->since > SUSPECT_MS) {
      *pp = x->next;
      free(x);
      continue;
    }
    if (!strcmp(x->addr, addr)) return 1;
    pp = &x->next;
  }
  return 0;
}

void dyn__suspects_free(dyn_runtime_t *rt) {
  while (rt->suspects) {
    struct dyn__suspect *x = rt->suspects;
    rt->suspects = x->next;
    free(x);
  }
}

static int tried(const dyn_stream_t *s, uint64_t id) {
  for (int i = 0; i < s->ntried; i++)
    if (s->tried[i] == id) return 1;
  return 0;
}

static uint64_t next_rand(dyn_client_t *c) { return dyn__splitmix64(&c->rng); }

static const inst_t *pick(dyn_client_t *c, dyn_stream_t *s) {
  if (!c->n) return NULL;
  if (s->opt.route == DYN_ROUTE_DIRECT) {
    for (size_t i = 0; i < c->n; i++)
      if (c->inst[i].id == s->opt.instance_id && !tried(s, c->inst[i].id)) return &c->inst[i];
    return NULL;
  }
  size_t start = s->opt.route == DYN_ROUTE_ROUND_ROBIN ? c->rr++ % c->n
                                                        : (size_t)(next_rand(c) % c->n);
  const inst_t *fallback = NULL;
  for (size_t k = 0; k < c->n; k++) {
    const inst_t *in = &c->inst[(start + k) % c->n];
    if (tried(s, in->id)) continue;
    if (!c->rt->suspects || !suspect(c->rt, in->addr)) return in;
    if (!fallback) fallback = in;
  }
  return fallback; /* every untried one is suspect: try one anyway */
}

static void on_timer(uv_timer_t *t) {
  dyn_stream_t *s = t->data;
  char msg[300];
  if (s->deferred_status) {
    snprintf(msg, sizeof msg, "%s", s->deferred_msg ? s->deferred_msg : "");
    finish(s, s->deferred_status, msg);
    return;
  }
  uint64_t waited = uv_now(s->c->rt->loop) - s->started;
  /* A pending stream's timer is its wait or its deadline, whichever ends
   * first (wait_for_instance). */
  if (s->state == S_PENDING && !(s->opt.deadline_ms && waited >= s->opt.deadline_ms)) {
    snprintf(msg, sizeof msg, "no live instance of %s within %d ms", s->c->ep->path,
             s->c->wait_ms);
    finish(s, DYN_ENOINSTANCE, msg);
    return;
  }
  snprintf(msg, sizeof msg, "deadline of %u ms passed", s->opt.deadline_ms);
  send_cancel(s);
  finish(s, DYN_ETIMEDOUT, msg);
}

static int arm_timer(dyn_stream_t *s, uint64_t ms) {
  if (!s->timer) {
    s->timer = malloc(sizeof *s->timer);
    if (!s->timer) return DYN_ENOMEM;
    uv_timer_init(s->c->rt->loop, s->timer);
    s->timer->data = s;
  }
  uv_timer_start(s->timer, on_timer, ms, 0);
  return DYN_OK;
}

static int keep_body(dyn_stream_t *s, const void *body, size_t len) {
  if (s->body) return DYN_OK;
  s->body = malloc(len ? len : 1);
  if (!s->body) return DYN_ENOMEM;
  if (len) memcpy(s->body, body, len);
  s->body_len = len;
  return DYN_OK;
}

/* Waits for the watch to sync or an instance to appear. */
static void wait_for_instance(dyn_stream_t *s, const void *body, size_t len) {
  dyn_client_t *c = s->c;
  if (keep_body(s, body, len)) {
    finish(s, DYN_ENOMEM, NULL);
    return;
  }
  s->state = S_PENDING;
  /* The caller's wait bounds the stream even while the watch is not synced
   * (the control plane is away, say): unsynced, nothing else would end it. */
  if (c->wait_ms > 0 || s->opt.deadline_ms) {
    uint64_t waited = uv_now(c->rt->loop) - s->started;
    uint64_t left = UINT64_MAX;
    if (c->wait_ms > 0)
      left = (uint64_t)c->wait_ms > waited ? (uint64_t)c->wait_ms - waited : 0;
    /* The deadline runs from the call, waiting included. */
    if (s->opt.deadline_ms) {
      uint64_t d = s->opt.deadline_ms > waited ? s->opt.deadline_ms - waited : 0;
      if (d < left) left = d;
    }
    if (!s->timer || !uv_is_active((uv_handle_t *)s->timer)) arm_timer(s, left);
  }
}

static void no_instance(dyn_stream_t *s) {
  char msg[300];
  if (s->ntried)
    snprintf(msg, sizeof msg, "could not connect to any instance of %s", s->c->ep->path);
  else if (s->opt.route == DYN_ROUTE_DIRECT)
    snprintf(msg, sizeof msg, "instance %" PRIx64 " of %s is not live", s->opt.instance_id,
             s->c->ep->path);
  else
    snprintf(msg, sizeof msg, "no live instance of %s", s->c->ep->path);
  finish(s, s->ntried ? DYN_ECONNECT : DYN_ENOINSTANCE, msg);
}

/* The instance refused the stream without running it: send it on. */
static void retry_elsewhere(dyn_stream_t *s, const char *why) {
  dyn_log(DYN_LOG_INFO, "instance %" PRIx64 ": %s; routing elsewhere", s->instance, why);
  if (s->peer && s->sid) dyn__map_del(&s->peer->streams, s->sid);
  s->peer = NULL;
  s->sid = 0;
  s->state = S_PENDING;
  dispatch(s, s->body, s->body_len);
}

static void dispatch(dyn_stream_t *s, const void *body, size_t len) {
  dyn_client_t *c = s->c;
  dyn_runtime_t *rt = c->rt;
  if (!c->synced) {
    wait_for_instance(s, body, len);
    return;
  }
  const inst_t *in = s->ntried < MAX_TRIES ? pick(c, s) : NULL;
  if (!in) {
    /* With a wait budget, a request whose instances all failed waits for a
     * new one (a crashed worker being restarted) rather than failing now. */
    if (c->wait_ms > 0 && s->ntried < MAX_TRIES && s->state != S_SENT) {
      uint64_t waited = uv_now(rt->loop) - s->started;
      if (waited < (uint64_t)c->wait_ms) {
        wait_for_instance(s, body, len);
        return;
      }
    }
    no_instance(s);
    return;
  }
  s->tried[s->ntried++] = in->id;
  dyn__peer_t *p = get_peer(rt, in->addr);
  if (!p) {
    /* Could not even start connecting: as good as a refused connection. */
    dispatch(s, body, len);
    return;
  }
  if (keep_body(s, body, len)) {
    finish(s, DYN_ENOMEM, NULL);
    return;
  }
  do {
    if (++p->next_stream == 0) p->next_stream = 1;
  } while (dyn__map_get(&p->streams, p->next_stream));
  if (dyn__map_add(&p->streams, p->next_stream, s)) {
    finish(s, DYN_ENOMEM, NULL);
    return;
  }
  s->peer = p;
  s->sid = p->next_stream;
  s->instance = in->id;
  s->state = S_SENT;
  uint8_t prefix[14 + DYN__PATH_MAX];
  size_t n = dyn__request_encode_prefix(prefix, s->opt.request_id, s->opt.deadline_ms,
                                        c->ep->path, c->ep->path_len);
  int rc = dyn__conn_send(p->conn, DYN__F_REQUEST, 0, s->sid, prefix, n, body, len);
  if (rc) finish(s, rc, rc == DYN_ETOOBIG ? "request larger than the maximum frame size" : NULL);
  if (s->state == S_SENT && s->opt.deadline_ms) {
    uint64_t waited = uv_now(rt->loop) - s->started;
    arm_timer(s, s->opt.deadline_ms > waited ? s->opt.deadline_ms - waited : 0);
  }
}

int dyn_client_generate(dyn_client_t *c, const dyn_call_options_t *opt, const void *body,
                        size_t len, const dyn_stream_callbacks_t *cb, void *ud,
                        dyn_stream_t **out) {
  if (!c || !cb || !cb->on_done || (len && !body)) return DYN_EINVAL;
  if (len + 14 + c->ep->path_len > c->rt->max_frame) return DYN_ETOOBIG;
  if (!c->rt->disc) return DYN_ECLOSED;
  dyn_call_options_t o = {DYN_ROUTE_RANDOM, 0, 0, 0};
  if (opt) o = *opt;
  if (o.route > DYN_ROUTE_DIRECT) return DYN_EINVAL;
  if (c->synced && c->wait_ms <= 0 && !c->n) return DYN_ENOINSTANCE;
  if (c->synced && c->wait_ms <= 0 && o.route == DYN_ROUTE_DIRECT) {
    size_t i = 0;
    while (i < c->n && c->inst[i].id != o.instance_id) i++;
    if (i == c->n) return DYN_ENOINSTANCE;
  }
  dyn_stream_t *s = calloc(1, sizeof *s);
  if (!s) return DYN_ENOMEM;
  s->c = c;
  s->cb = *cb;
  s->ud = ud;
  s->opt = o;
  if (!s->opt.request_id) s->opt.request_id = ++c->rt->next_request_id;
  /* The loop's clock stands still while the caller works outside it: a
   * stale start would spend the deadline before the call was made. */
  uv_update_time(c->rt->loop);
  s->started = uv_now(c->rt->loop);
  s->next = c->open;
  if (c->open) c->open->prev = s;
  c->open = s;
  if (out) *out = s;
  s->in_generate = 1;
  dispatch(s, body, len);
  s->in_generate = 0;
  return DYN_OK;
}

/* ---- the live instance list -------------------------------------------- */

static void retry_pending(dyn_client_t *c) {
  /* Collect first: dispatch may finish streams and change the list. */
  size_t n = 0;
  /* A stream whose failure is only waiting to be reported stays failed. */
  for (dyn_stream_t *s = c->open; s; s = s->next)
    n += s->state == S_PENDING && !s->peer && !s->deferred_status;
  if (!n) return;
  dyn_stream_t **v = malloc(n * sizeof *v);
  if (!v) return;
  size_t k = 0;
  for (dyn_stream_t *s = c->open; s && k < n; s = s->next)
    if (s->state == S_PENDING && !s->peer && !s->deferred_status) v[k++] = s;
  for (size_t i = 0; i < k; i++) {
    if (v[i]->timer) uv_timer_stop(v[i]->timer);
    dispatch(v[i], v[i]->body, v[i]->body_len);
  }
  free(v);
}

static int parse_instance(dyn_client_t *c, const char *key, const char *value, inst_t *out) {
  const char *hex = key + c->prefix_len;
  char *end;
  out->id = strtoull(hex, &end, 16);
  if (!*hex || *end) return DYN_EINVAL;
  json_error_t err;
  json_t *v = json_loads(value, 0, &err);
  const char *addr = v ? json_string_value(json_object_get(v, "address")) : NULL;
  int rc = addr && strlen(addr) < sizeof out->addr ? DYN_OK : DYN_EINVAL;
  if (!rc) snprintf(out->addr, sizeof out->addr, "%s", addr);
  json_decref(v);
  return rc;
}

static void on_watch(dyn_watch_event_t ev, const char *key, const char *value, size_t len,
                     void *ud) {
  dyn_client_t *c = ud;
  inst_t in;
  switch (ev) {
    case DYN_WATCH_PUT:
      if (parse_instance(c, key, value, &in)) {
        dyn_log(DYN_LOG_WARN, "ignoring malformed instance record %s", key);
        return;
      }
      if (c->rt->suspects) suspect_clear(c->rt, in.addr); /* registered anew */
      for (size_t i = 0; i < c->n; i++)
        if (c->inst[i].id == in.id) {
          c->inst[i] = in;
          goto changed;
        }
      if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        inst_t *v = realloc(c->inst, cap * sizeof *v);
        if (!v) return;
        c->inst = v;
        c->cap = cap;
      }
      c->inst[c->n++] = in;
      break;
    case DYN_WATCH_DELETE: {
      char *end;
      uint64_t id = strtoull(key + c->prefix_len, &end, 16);
      for (size_t i = 0; i < c->n; i++)
        if (c->inst[i].id == id) {
          c->inst[i] = c->inst[--c->n];
          break;
        }
      break;
    }
    case DYN_WATCH_SYNCED:
      c->synced = 1;
      break;
    case DYN_WATCH_RESET:
      c->synced = 0;
      c->n = 0;
      break;
  }
changed:
  if (!c->synced) return;
  if (c->on_change) c->on_change(c, c->on_change_ud);
  retry_pending(c);
}

int dyn_endpoint_client(dyn_endpoint_t *ep, dyn_client_t **out) {
  dyn_runtime_t *rt = dyn_endpoint_runtime(ep);
  dyn_client_t *c = calloc(1, sizeof *c);
  if (!c) return DYN_ENOMEM;
  c->rt = rt;
  c->ep = ep;
  uv_random(NULL, NULL, &c->rng, sizeof c->rng, 0, NULL);
  c->rng |= 1;
  char prefix[DYN__PATH_MAX + 16];
  dyn_component_t *comp = ep->component;
  dyn_instance_prefix(comp->ns->name, comp->name, ep->name, prefix, sizeof prefix);
  c->prefix_len = strlen(prefix);
  int rc = dyn_discovery_watch(rt, prefix, on_watch, c, &c->watch);
  if (rc) {
    free(c);
    return rc;
  }
  *out = c;
  return DYN_OK;
}

void dyn_client_free(dyn_client_t *c) {
  if (!c) return;
  while (c->open) dyn_stream_cancel(c->open);
  dyn_discovery_unwatch(c->watch);
  free(c->inst);
  free(c);
}

void dyn_client_set_wait(dyn_client_t *c, int wait_ms) { c->wait_ms = wait_ms; }

size_t dyn_client_instances(const dyn_client_t *c, uint64_t *ids, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < c->n; i++) {
    if (c->rt->suspects && suspect(c->rt, c->inst[i].addr)) continue;
    if (n < cap) ids[n] = c->inst[i].id;
    n++;
  }
  return n;
}

void dyn_client_on_change(dyn_client_t *c, dyn_instances_fn fn, void *ud) {
  c->on_change = fn;
  c->on_change_ud = ud;
}

static void on_wait_timer(uv_timer_t *t) { *(int *)t->data = 1; }

int dyn_client_wait(dyn_client_t *c, size_t min_instances, int timeout_ms) {
  int expired = 0;
  uv_timer_t t;
  uv_timer_init(c->rt->loop, &t);
  t.data = &expired;
  /* As in sync.c: from now, and repeating so a timer that fires before the
   * poll cannot leave the poll waiting without a timeout. */
  uv_update_time(c->rt->loop);
  uv_timer_start(&t, on_wait_timer, timeout_ms > 0 ? (uint64_t)timeout_ms : 0, 1);
  while (!(c->synced && c->n >= min_instances) && !expired) dyn__run_once(c->rt);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(c->rt->loop, UV_RUN_NOWAIT); /* let the timer's close complete */
  return c->synced && c->n >= min_instances ? DYN_OK : DYN_ETIMEDOUT;
}

dyn_runtime_t *dyn__client_runtime(const dyn_client_t *c) { return c->rt; }
