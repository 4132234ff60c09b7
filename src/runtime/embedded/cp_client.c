/* cp_client.c - the embedded backend: discovery and events over one session
 * with the control plane.
 *
 * The session is the process's lease: its id names the process's instances
 * and its end removes them. We keep what we asked for (keys, watches,
 * subscriptions) so that if the control plane restarts we reconnect, put it
 * all back, and tell watchers to RESET before the fresh snapshot, which is
 * the same resync contract the etcd backend keeps.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/embedded/cp_path.h"
#include "runtime/embedded/cp_proto.h"
#include "runtime/keyset.h"
#include "runtime/internal.h"

#define OPEN_TIMEOUT_MS 5000
#define RETRY_MS 250

typedef struct emb_watch {
  struct emb_watch *next;
  uint32_t stream;
  dyn_watch_fn fn;
  void *ud;
  char prefix[];
} emb_watch_t;

typedef struct emb_sub {
  struct emb_sub *next;
  uint32_t stream;
  dyn_event_fn fn;
  void *ud;
  char pattern[];
} emb_sub_t;

typedef struct emb {
  dyn_runtime_t *rt;
  char *path;
  dyn__conn_t *conn;
  uint64_t session;
  int up;
  int failed; /* the first connection attempt failed */
  int closing;
  int retry_closed; /* the retry timer's close completed */
  char last_error[160];
  uint32_t next_stream;
  uint32_t last_put; /* the newest put not yet acknowledged, or 0 */
  dyn__keyset_t keys; /* put back after reconnecting */
  emb_watch_t *watches;
  emb_sub_t *subs;
  uv_timer_t retry;
} emb_t;

static void connect_now(emb_t *e);

static uint32_t next_stream(emb_t *e) {
  if (++e->next_stream == 0) e->next_stream = 1;
  return e->next_stream;
}

static void send_pair(emb_t *e, uint8_t type, uint32_t stream,
                      const char *str, const void *rest, size_t rest_len) {
  if (!e->conn) return;
  uint8_t pre[2 + DYN__CP_KEY_MAX];
  size_t n = dyn__cp_pair_prefix(pre, str, (uint16_t)strlen(str));
  dyn__conn_send(e->conn, type, 0, stream, pre, n, rest, rest_len);
}

/* The control plane answers a connection's frames in order, so once the
 * newest put is acknowledged every earlier one is too. */
static void send_put(emb_t *e, const char *key, const char *value) {
  uint32_t stream = next_stream(e);
  if (e->conn) e->last_put = stream;
  send_pair(e, DYN__CP_PUT, stream, key, value, strlen(value));
}

static void send_string(emb_t *e, uint8_t type, uint32_t stream, const char *s) {
  if (e->conn) dyn__conn_send(e->conn, type, 0, stream, s, s ? strlen(s) : 0, NULL, 0);
}

/* ---- incoming ---------------------------------------------------------- */

static void on_event(emb_t *e, const dyn__frame_t *f) {
  emb_watch_t *w = e->watches;
  while (w && w->stream != f->stream) w = w->next;
  if (!w || f->len < 1) return; /* unwatched meanwhile */
  uint8_t kind = f->payload[0];
  if (kind == DYN_WATCH_SYNCED) {
    w->fn(DYN_WATCH_SYNCED, NULL, NULL, 0, w->ud);
    return;
  }
  dyn__cp_pair_t pr;
  const char *why;
  if ((kind != DYN_WATCH_PUT && kind != DYN_WATCH_DELETE) ||
      dyn__cp_pair_decode(f->payload + 1, f->len - 1, &pr, &why)) {
    dyn__conn_close(e->conn, DYN_EPROTO, "malformed watch event");
    return;
  }
  char *copy = malloc((size_t)pr.str_len + 1 + pr.rest_len + 1);
  if (!copy) return;
  memcpy(copy, pr.str, pr.str_len);
  copy[pr.str_len] = 0;
  char *value = copy + pr.str_len + 1;
  memcpy(value, pr.rest, pr.rest_len);
  value[pr.rest_len] = 0;
  w->fn((dyn_watch_event_t)kind, copy, value, pr.rest_len, w->ud);
  free(copy);
}

static void on_msg(emb_t *e, const dyn__frame_t *f) {
  emb_sub_t *s = e->subs;
  while (s && s->stream != f->stream) s = s->next;
  if (!s) return;
  dyn__cp_pair_t pr;
  const char *why;
  if (dyn__cp_pair_decode(f->payload, f->len, &pr, &why)) {
    dyn__conn_close(e->conn, DYN_EPROTO, "malformed event message");
    return;
  }
  char subject[DYN__CP_KEY_MAX + 1];
  memcpy(subject, pr.str, pr.str_len);
  subject[pr.str_len] = 0;
  s->fn(subject, pr.rest, pr.rest_len, s->ud);
}

static void on_frame(dyn__conn_t *c, const dyn__frame_t *f) {
  emb_t *e = c->owner;
  if (!c->hello_done) {
    dyn__hello_t h;
    if (dyn__conn_hello_recv(c, f, DYN__ROLE_CLIENT, e->session, &h)) return;
    uv_os_fd_t fd;
    char why[320];
    if (uv_fileno(&c->h.handle, &fd) == 0 && dyn__control_peer_check(fd, e->path, why, sizeof why)) {
      dyn__conn_close(c, DYN_ECONTROL, why);
      return;
    }
    if (h.session == 0) {
      dyn__conn_close(c, DYN_EPROTO, "the control plane gave no session id");
      return;
    }
    e->session = e->session ? e->session : h.session;
    if (e->up == 0 && e->session != h.session)
      dyn_log(DYN_LOG_WARN, "control plane gave a new session id");
    e->up = 1;
    return;
  }
  switch (f->type) {
    case DYN__CP_EVENT: on_event(e, f); break;
    case DYN__CP_MSG: on_msg(e, f); break;
    case DYN__CP_OK:
      if (f->stream == e->last_put) e->last_put = 0;
      break;
    case DYN__F_ERROR:
      dyn_log(DYN_LOG_WARN, "control plane refused operation %u: %.*s", f->stream,
              (int)(f->len < 200 ? f->len : 200), (const char *)f->payload);
      break;
    default:
      dyn__conn_close(c, DYN_EPROTO, "unexpected frame from the control plane");
  }
}

static void on_retry(uv_timer_t *t) { connect_now(t->data); }

/* After emb_close the session may still be flushing its last frames, and
 * its callbacks use e: e goes once both the timer and the connection have. */
static void free_if_done(emb_t *e) {
  if (!e->retry_closed || e->conn) return;
  free(e->path);
  free(e);
}

static void on_close(dyn__conn_t *c, int status, const char *why) {
  emb_t *e = c->owner;
  int was_up = e->up;
  e->conn = NULL;
  e->up = 0;
  snprintf(e->last_error, sizeof e->last_error, "%s", why ? why : dyn_strerror(status));
  if (e->closing) {
    free_if_done(e);
    return;
  }
  if (!e->session) {
    e->failed = 1;
    return;
  }
  if (was_up) {
    dyn_log(DYN_LOG_WARN, "lost the control plane at %s (%s); reconnecting",
            e->path, e->last_error);
    for (emb_watch_t *w = e->watches; w; w = w->next)
      w->fn(DYN_WATCH_RESET, NULL, NULL, 0, w->ud);
  }
  uv_timer_start(&e->retry, on_retry, RETRY_MS, 0);
}

/* Opens a connection and replays everything this process asked for; the
 * frames wait in the output buffer until the socket is connected. */
static void connect_now(emb_t *e) {
  dyn_runtime_t *rt = e->rt;
  /* Checked before every attempt: the socket may be swapped while we wait. */
  if (dyn__control_path_check(e->path, e->last_error, sizeof e->last_error)) {
    if (!e->session) {
      e->failed = 1;
      return;
    }
    dyn_log(DYN_LOG_WARN, "not reconnecting yet: %s", e->last_error);
    uv_timer_start(&e->retry, on_retry, RETRY_MS, 0);
    return;
  }
  e->conn = dyn__conn_new(rt->loop, &rt->flusher, 1, rt->max_frame, on_frame,
                          on_close, e);
  if (!e->conn) return;
  e->last_put = 0;
  dyn__conn_hello(e->conn, DYN__ROLE_CLIENT, e->session);
  for (dyn__key_t *k = e->keys.head; k; k = k->next)
    send_put(e, k->key, k->value);
  for (emb_watch_t *w = e->watches; w; w = w->next)
    send_string(e, DYN__CP_WATCH, w->stream, w->prefix);
  for (emb_sub_t *s = e->subs; s; s = s->next)
    send_string(e, DYN__CP_SUB, s->stream, s->pattern);
  if (dyn__conn_connect(e->conn, e->path)) dyn__conn_close(e->conn, DYN_ECONNECT, "bad socket path");
}

static void on_open_timeout(uv_timer_t *t) {
  emb_t *e = t->data;
  e->failed = 1;
  snprintf(e->last_error, sizeof e->last_error, "no answer within %d ms", OPEN_TIMEOUT_MS);
}

static void on_retry_closed(uv_handle_t *h) {
  emb_t *e = h->data;
  e->retry_closed = 1;
  free_if_done(e);
}

int dyn__embedded_open(dyn_runtime_t *rt, const char *path, void **state) {
  emb_t *e = calloc(1, sizeof *e);
  if (!e || !(e->path = strdup(path))) {
    free(e);
    return DYN_ENOMEM;
  }
  e->rt = rt;
  uv_timer_init(rt->loop, &e->retry);
  e->retry.data = e;
  connect_now(e);
  uv_timer_start(&e->retry, on_open_timeout, OPEN_TIMEOUT_MS, 0);
  while (!e->up && !e->failed) dyn__run_once(rt);
  uv_timer_stop(&e->retry);
  if (!e->up) {
    dyn_log(DYN_LOG_ERROR,
            "cannot reach the control plane at %s: %s (start one with "
            "`dynamo control`, or run under `dynamo serve`)",
            path, e->last_error);
    e->closing = 1;
    if (e->conn) dyn__conn_close(e->conn, DYN_ECLOSED, "open failed");
    uv_close((uv_handle_t *)&e->retry, on_retry_closed); /* frees e */
    uv_run(rt->loop, UV_RUN_NOWAIT);
    return DYN_ECONTROL;
  }
  *state = e;
  return DYN_OK;
}

/* ---- discovery ops ----------------------------------------------------- */

static int emb_put(void *st, const char *key, const char *value) {
  emb_t *e = st;
  if (strlen(key) > DYN__CP_KEY_MAX) return DYN_EINVAL;
  if (dyn__keyset_put(&e->keys, key, value)) return DYN_ENOMEM;
  send_put(e, key, value);
  return DYN_OK;
}

static int emb_del(void *st, const char *key) {
  emb_t *e = st;
  dyn__keyset_del(&e->keys, key);
  send_string(e, DYN__CP_DEL, next_stream(e), key);
  return DYN_OK;
}

static int emb_watch(void *st, const char *prefix, dyn_watch_fn fn, void *ud,
                     void **handle) {
  emb_t *e = st;
  size_t n = strlen(prefix);
  if (n == 0 || n > DYN__CP_KEY_MAX) return DYN_EINVAL;
  emb_watch_t *w = malloc(sizeof *w + n + 1);
  if (!w) return DYN_ENOMEM;
  memcpy(w->prefix, prefix, n + 1);
  w->fn = fn;
  w->ud = ud;
  w->stream = next_stream(e);
  w->next = e->watches;
  e->watches = w;
  send_string(e, DYN__CP_WATCH, w->stream, prefix);
  *handle = w;
  return DYN_OK;
}

static void emb_unwatch(void *st, void *handle) {
  emb_t *e = st;
  for (emb_watch_t **pp = &e->watches; *pp; pp = &(*pp)->next)
    if (*pp == handle) {
      *pp = (*pp)->next;
      send_string(e, DYN__CP_UNWATCH, ((emb_watch_t *)handle)->stream, NULL);
      free(handle);
      return;
    }
}

static uint64_t emb_session(void *st) { return ((emb_t *)st)->session; }

/* Connected, and the control plane holds every key we put. A refused put
 * (an error, not an OK) keeps last_put set, so this stays 0: that key is
 * not registered. */
static int emb_registered(void *st) {
  emb_t *e = st;
  return e->up && !e->last_put;
}

static void emb_close(void *st) {
  emb_t *e = st;
  e->closing = 1;
  if (e->conn) dyn__conn_close_flushed(e->conn, DYN_ECLOSED, "runtime closing");
  dyn__keyset_clear(&e->keys);
  while (e->watches) {
    emb_watch_t *w = e->watches;
    e->watches = w->next;
    free(w);
  }
  while (e->subs) {
    emb_sub_t *s = e->subs;
    e->subs = s->next;
    free(s);
  }
  uv_close((uv_handle_t *)&e->retry, on_retry_closed);
}

const dyn__discovery_ops_t dyn__embedded_discovery = {
    "embedded", emb_put, emb_del, emb_watch, emb_unwatch, emb_session, emb_close,
    emb_registered};

/* ---- events ops -------------------------------------------------------- */

static int emb_publish(void *st, const char *subject, const void *data, size_t len) {
  emb_t *e = st;
  if (!e->conn) return DYN_ECONTROL; /* at most once: dropped while away */
  send_pair(e, DYN__CP_PUB, 0, subject, data, len);
  return DYN_OK;
}

static int emb_subscribe(void *st, const char *pattern, dyn_event_fn fn,
                         void *ud, void **handle) {
  emb_t *e = st;
  size_t n = strlen(pattern);
  emb_sub_t *s = malloc(sizeof *s + n + 1);
  if (!s) return DYN_ENOMEM;
  memcpy(s->pattern, pattern, n + 1);
  s->fn = fn;
  s->ud = ud;
  s->stream = next_stream(e);
  s->next = e->subs;
  e->subs = s;
  send_string(e, DYN__CP_SUB, s->stream, pattern);
  *handle = s;
  return DYN_OK;
}

static void emb_unsubscribe(void *st, void *handle) {
  emb_t *e = st;
  for (emb_sub_t **pp = &e->subs; *pp; pp = &(*pp)->next)
    if (*pp == handle) {
      *pp = (*pp)->next;
      send_string(e, DYN__CP_UNSUB, ((emb_sub_t *)handle)->stream, NULL);
      free(handle);
      return;
    }
}

/* Both interfaces share one session, so closing happens once, from
 * discovery; the events side has nothing of its own to free. */
static void emb_events_close(void *st) { (void)st; }

const dyn__events_ops_t dyn__embedded_events = {
    "embedded", emb_publish, emb_subscribe, emb_unsubscribe, emb_events_close};
