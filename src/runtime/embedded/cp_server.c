/* cp_server.c - the embedded control plane: registry, watches, pub/sub.
 *
 * One event loop serves every process of a graph over a Unix socket. A
 * session is one connection; the keys it puts live until it ends, which is
 * what makes a dead process's instances vanish at once: the kernel closes
 * its socket, we read EOF, and every watcher hears a DELETE in the same
 * loop pass. Lists are plain linked lists: the control plane sees a handful
 * of registrations per process, never a request.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/env_names.h"
#include "dynamo/control.h"
#include "dynamo/discovery.h"
#include "dynamo/events.h"
#include "dynamo/runtime.h"
#include "runtime/conn.h"
#include "runtime/embedded/cp_path.h"
#include "runtime/embedded/cp_proto.h"

typedef struct cp_session cp_session_t;

typedef struct cp_key {
  struct cp_key *next;
  cp_session_t *owner;
  char *key;
  char *value;
  size_t vlen;
} cp_key_t;

typedef struct cp_watch {
  struct cp_watch *next;
  uint32_t stream;
  size_t plen;
  char prefix[];
} cp_watch_t;

typedef struct cp_sub {
  struct cp_sub *next;
  uint32_t stream;
  char pattern[];
} cp_sub_t;

struct cp_session {
  cp_session_t *next;
  dyn_control_t *cp;
  dyn__conn_t *conn;
  uint64_t id;
  cp_watch_t *watches;
  cp_sub_t *subs;
};

struct dyn_control {
  uv_loop_t *loop;
  uv_pipe_t listener;
  dyn__flusher_t flusher;
  cp_session_t *sessions;
  cp_key_t *keys;
  size_t nsessions, nkeys;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

/* ---- sending ---------------------------------------------------------- */

static void send_event(cp_session_t *s, uint32_t stream, uint8_t kind,
                       const char *key, const char *value, size_t vlen) {
  uint8_t pre[3 + DYN__CP_KEY_MAX];
  size_t klen = key ? strlen(key) : 0;
  pre[0] = kind;
  size_t n = 1;
  if (key) n += dyn__cp_pair_prefix(pre + 1, key, (uint16_t)klen);
  dyn__conn_send(s->conn, DYN__CP_EVENT, 0, stream, pre, n, value, vlen);
}

static void notify(dyn_control_t *cp, uint8_t kind, const cp_key_t *k) {
  size_t klen = strlen(k->key);
  for (cp_session_t *s = cp->sessions; s; s = s->next)
    for (cp_watch_t *w = s->watches; w; w = w->next)
      if (klen >= w->plen && !memcmp(k->key, w->prefix, w->plen))
        send_event(s, w->stream, kind, k->key, k->value,
                   kind == DYN_WATCH_PUT ? k->vlen : 0);
}

static void reply(cp_session_t *s, uint32_t stream, const char *err) {
  if (err)
    dyn__conn_send(s->conn, DYN__F_ERROR, 0, stream, err, strlen(err), NULL, 0);
  else
    dyn__conn_send(s->conn, DYN__CP_OK, 0, stream, NULL, 0, NULL, 0);
}

/* ---- registry ----------------------------------------------------------- */

static cp_key_t **find_key(dyn_control_t *cp, const char *key, size_t klen) {
  cp_key_t **pp = &cp->keys;
  for (; *pp; pp = &(*pp)->next)
    if (!strncmp((*pp)->key, key, klen) && (*pp)->key[klen] == 0) break;
  return pp;
}

static void drop_key(dyn_control_t *cp, cp_key_t **pp) {
  cp_key_t *k = *pp;
  *pp = k->next;
  cp->nkeys--;
  notify(cp, DYN_WATCH_DELETE, k);
  free(k->key);
  free(k->value);
  free(k);
}

static const char *do_put(cp_session_t *s, const uint8_t *p, size_t n) {
  dyn__cp_pair_t pr;
  const char *why;
  if (dyn__cp_pair_decode(p, n, &pr, &why)) return why;
  dyn_control_t *cp = s->cp;
  cp_key_t **pp = find_key(cp, pr.str, pr.str_len);
  cp_key_t *k = *pp;
  char *value = malloc(pr.rest_len + 1);
  if (!value) return "out of memory";
  memcpy(value, pr.rest, pr.rest_len);
  value[pr.rest_len] = 0;
  if (!k) {
    k = calloc(1, sizeof *k);
    if (!k || !(k->key = strndup(pr.str, pr.str_len))) {
      free(k);
      free(value);
      return "out of memory";
    }
    k->next = cp->keys;
    cp->keys = k;
    cp->nkeys++;
  } else {
    free(k->value);
  }
  k->owner = s; /* a put takes the key over, as an etcd put with a new lease */
  k->value = value;
  k->vlen = pr.rest_len;
  notify(cp, DYN_WATCH_PUT, k);
  return NULL;
}

static const char *do_del(cp_session_t *s, const uint8_t *p, size_t n) {
  const char *why;
  if (dyn__cp_string_check(p, n, &why)) return why;
  cp_key_t **pp = find_key(s->cp, (const char *)p, n);
  if (*pp) drop_key(s->cp, pp);
  return NULL;
}

static const char *do_watch(cp_session_t *s, uint32_t stream,
                            const uint8_t *p, size_t n) {
  const char *why;
  if (dyn__cp_string_check(p, n, &why)) return why;
  for (cp_watch_t *w = s->watches; w; w = w->next)
    if (w->stream == stream) return "watch id already in use";
  cp_watch_t *w = malloc(sizeof *w + n + 1);
  if (!w) return "out of memory";
  w->stream = stream;
  w->plen = n;
  memcpy(w->prefix, p, n);
  w->prefix[n] = 0;
  w->next = s->watches;
  s->watches = w;
  for (cp_key_t *k = s->cp->keys; k; k = k->next)
    if (!strncmp(k->key, w->prefix, n))
      send_event(s, stream, DYN_WATCH_PUT, k->key, k->value, k->vlen);
  send_event(s, stream, DYN_WATCH_SYNCED, NULL, NULL, 0);
  return NULL;
}

static const char *do_sub(cp_session_t *s, uint32_t stream, const uint8_t *p,
                          size_t n) {
  const char *why;
  if (dyn__cp_string_check(p, n, &why)) return why;
  cp_sub_t *sub = malloc(sizeof *sub + n + 1);
  if (!sub) return "out of memory";
  memcpy(sub->pattern, p, n);
  sub->pattern[n] = 0;
  if (!dyn_subject_valid(sub->pattern, 1)) {
    free(sub);
    return "invalid subject pattern";
  }
  sub->stream = stream;
  sub->next = s->subs;
  s->subs = sub;
  return NULL;
}

static const char *do_pub(cp_session_t *s, const uint8_t *p, size_t n) {
  dyn__cp_pair_t pr;
  const char *why;
  if (dyn__cp_pair_decode(p, n, &pr, &why)) return why;
  char subject[DYN__CP_KEY_MAX + 1];
  memcpy(subject, pr.str, pr.str_len);
  subject[pr.str_len] = 0;
  if (!dyn_subject_valid(subject, 0)) return "invalid subject";
  for (cp_session_t *t = s->cp->sessions; t; t = t->next)
    for (cp_sub_t *sub = t->subs; sub; sub = sub->next)
      if (dyn_subject_match(sub->pattern, subject))
        dyn__conn_send(t->conn, DYN__CP_MSG, 0, sub->stream, p,
                       2u + pr.str_len, pr.rest, pr.rest_len);
  return NULL;
}

static void unwatch(cp_session_t *s, uint32_t stream) {
  for (cp_watch_t **pp = &s->watches; *pp; pp = &(*pp)->next)
    if ((*pp)->stream == stream) {
      cp_watch_t *w = *pp;
      *pp = w->next;
      free(w);
      return;
    }
}

static void unsub(cp_session_t *s, uint32_t stream) {
  for (cp_sub_t **pp = &s->subs; *pp; pp = &(*pp)->next)
    if ((*pp)->stream == stream) {
      cp_sub_t *sub = *pp;
      *pp = sub->next;
      free(sub);
      return;
    }
}

/* ---- sessions ---------------------------------------------------------- */

static uint64_t new_session_id(void) {
  uint64_t id = 0;
  while (id == 0 && uv_random(NULL, NULL, &id, sizeof id, 0, NULL) == 0) {}
  return id ? id : (uint64_t)uv_hrtime();
}

static void protocol_error(cp_session_t *s, const char *why) {
  dyn_log(DYN_LOG_WARN, "control: closing session %016llx: %s",
          (unsigned long long)s->id, why);
  dyn__conn_close(s->conn, DYN_EPROTO, why);
}

static void on_session_frame(dyn__conn_t *c, const dyn__frame_t *f) {
  cp_session_t *s = c->owner;
  const char *why = NULL;
  if (!c->hello_done) {
    dyn__hello_t h;
    dyn__conn_hello_recv(c, f, DYN__ROLE_SERVER, s->id, &h);
    return;
  }
  switch (f->type) {
    case DYN__CP_PUT:
      reply(s, f->stream, do_put(s, f->payload, f->len));
      break;
    case DYN__CP_DEL:
      reply(s, f->stream, do_del(s, f->payload, f->len));
      break;
    case DYN__CP_WATCH:
      if ((why = do_watch(s, f->stream, f->payload, f->len))) reply(s, f->stream, why);
      break;
    case DYN__CP_UNWATCH:
      unwatch(s, f->stream);
      break;
    case DYN__CP_PUB:
      if ((why = do_pub(s, f->payload, f->len))) reply(s, f->stream, why);
      break;
    case DYN__CP_SUB:
      if ((why = do_sub(s, f->stream, f->payload, f->len))) reply(s, f->stream, why);
      break;
    case DYN__CP_UNSUB:
      unsub(s, f->stream);
      break;
    default:
      protocol_error(s, "unexpected frame type on the control plane");
  }
}

static void on_session_close(dyn__conn_t *c, int status, const char *why) {
  cp_session_t *s = c->owner;
  dyn_control_t *cp = s->cp;
  for (cp_session_t **pp = &cp->sessions; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  cp->nsessions--;
  while (s->watches) unwatch(s, s->watches->stream);
  while (s->subs) unsub(s, s->subs->stream);
  /* The session's keys go with it: watchers learn in this same pass. */
  for (cp_key_t **pp = &cp->keys; *pp;) {
    if ((*pp)->owner == s)
      drop_key(cp, pp);
    else
      pp = &(*pp)->next;
  }
  dyn_log(DYN_LOG_DEBUG, "control: session %016llx ended: %s",
          (unsigned long long)s->id, why ? why : "closed");
  free(s);
}

static void on_connection(uv_stream_t *server, int status) {
  dyn_control_t *cp = server->data;
  if (status < 0) {
    dyn_log(DYN_LOG_WARN, "control: accept failed: %s", uv_strerror(status));
    return;
  }
  cp_session_t *s = calloc(1, sizeof *s);
  if (!s) return;
  s->cp = cp;
  s->id = new_session_id();
  s->conn = dyn__conn_new(cp->loop, &cp->flusher, 1, DYN_DEFAULT_MAX_FRAME,
                          on_session_frame, on_session_close, s);
  if (!s->conn) {
    free(s);
    return;
  }
  if (uv_accept(server, &s->conn->h.stream) || dyn__conn_start(s->conn)) {
    s->conn->on_close = NULL;
    dyn__conn_close(s->conn, DYN_ESYS, "accept");
    free(s);
    return;
  }
  s->next = cp->sessions;
  cp->sessions = s;
  cp->nsessions++;
}

/* A socket file whose owner still answers is a live control plane. */
static int socket_alive(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int alive = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return alive;
}

static void on_listener_closed(uv_handle_t *h) { free(h->data); }

int dyn_control_start(uv_loop_t *loop, const char *path, dyn_control_t **out) {
  if (!path) path = dyn_control_default_path();
  dyn_control_t *cp = calloc(1, sizeof *cp);
  if (!cp) return DYN_ENOMEM;
  if (strlen(path) >= sizeof cp->path) {
    dyn_log(DYN_LOG_ERROR, "control: socket path too long: %s", path);
    free(cp);
    return DYN_EINVAL;
  }
  snprintf(cp->path, sizeof cp->path, "%s", path);
  char why[320];
  if (dyn__control_path_check(path, why, sizeof why)) {
    dyn_log(DYN_LOG_ERROR, "control: %s", why);
    free(cp);
    return DYN_ECONTROL;
  }
  if (access(path, F_OK) == 0) {
    if (socket_alive(path)) {
      dyn_log(DYN_LOG_ERROR, "control: a control plane already listens on %s", path);
      free(cp);
      return DYN_EEXIST;
    }
    unlink(path);
  }
  cp->loop = loop;
  uv_pipe_init(loop, &cp->listener, 0);
  cp->listener.data = cp;
  int rc = uv_pipe_bind(&cp->listener, path);
  if (!rc) rc = uv_listen((uv_stream_t *)&cp->listener, 128, on_connection);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "control: cannot listen on %s: %s", path, uv_strerror(rc));
    uv_close((uv_handle_t *)&cp->listener, on_listener_closed);
    return DYN_ESYS;
  }
  chmod(path, 0600);
  dyn__flusher_init(&cp->flusher, loop);
  *out = cp;
  return DYN_OK;
}

void dyn_control_stop(dyn_control_t *cp) {
  while (cp->sessions) dyn__conn_close(cp->sessions->conn, DYN_ECLOSED, "control plane stopping");
  dyn__flusher_close(&cp->flusher);
  unlink(cp->path);
  uv_close((uv_handle_t *)&cp->listener, on_listener_closed);
}

const char *dyn_control_path(const dyn_control_t *cp) { return cp->path; }
size_t dyn_control_sessions(const dyn_control_t *cp) { return cp->nsessions; }
size_t dyn_control_keys(const dyn_control_t *cp) { return cp->nkeys; }
