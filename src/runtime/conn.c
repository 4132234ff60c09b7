/* conn.c - framed connections: reading, frame dispatch, corked writes.
 *
 * Output is corked: dyn__conn_send() appends to c->out and queues c on its
 * flusher, whose prepare handle runs after every callback of a loop pass and
 * before the loop polls. A flush tries a non-blocking write first; whatever
 * the socket does not take moves to c->inflight for one uv_write(), and new
 * output keeps accumulating in c->out meanwhile.
 */
#include "runtime/conn.h"

#include "runtime/addr.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/env_names.h"
#include "dynamo/runtime.h"
#include "dynamo/status.h"

#define READ_CHUNK (64u * 1024u)
/* A budgeted connection's read buffer shrinks back to this once the big
 * frame that grew it is consumed: what two reads of small frames use. */
#define KEEP_IN (2u * READ_CHUNK)
/* Past this much queued output, write at once rather than at loop end. */
#define EAGER_FLUSH (256u * 1024u)

static void flush(dyn__conn_t *c);

/* A peer that vanishes without closing (a cut network, a host gone) must
 * not leave streams waiting forever: the kernel probes a connection idle
 * for DEAD_PEER_IDLE_S, and fails it (ETIMEDOUT, so every stream on it
 * ends with DYN_EDISCONNECTED) once probes, data or the connect itself
 * went unanswered for DEAD_PEER_MS. A live peer's kernel answers the
 * probes, however long its handler computes. */
#define DEAD_PEER_IDLE_S 2
#define DEAD_PEER_MS 10000u

static void watch_peer(dyn__conn_t *c) {
  uv_os_fd_t fd;
  if (c->h.handle.type != UV_TCP || uv_fileno(&c->h.handle, &fd)) return;
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_USER_TIMEOUT)
  int idle = DEAD_PEER_IDLE_S, intvl = 1;
  unsigned timeout = DEAD_PEER_MS;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof timeout);
#endif
}

static void flusher_unlink(dyn__conn_t *c) {
  if (!c->flush_queued) return;
  dyn__conn_t **pp = &c->flusher->head;
  while (*pp && *pp != c) pp = &(*pp)->flush_next;
  if (*pp) *pp = c->flush_next;
  c->flush_next = NULL;
  c->flush_queued = 0;
}

void dyn__flusher_run(dyn__flusher_t *fl) {
  while (fl->head) {
    dyn__conn_t *c = fl->head;
    fl->head = c->flush_next;
    c->flush_next = NULL;
    c->flush_queued = 0;
    flush(c);
  }
}

static void on_prepare(uv_prepare_t *p) {
  dyn__flusher_run((dyn__flusher_t *)p->data);
}

void dyn__flusher_init(dyn__flusher_t *fl, uv_loop_t *loop) {
  fl->head = NULL;
  fl->live = NULL;
  uv_prepare_init(loop, &fl->prepare);
  fl->prepare.data = fl;
  uv_prepare_start(&fl->prepare, on_prepare);
  /* The flusher alone must not keep the loop alive. */
  uv_unref((uv_handle_t *)&fl->prepare);
}

void dyn__flusher_close(dyn__flusher_t *fl) {
  dyn__flusher_run(fl);
  /* A connection still writing would outlive its owner (and this flusher)
   * and call back into freed memory when the write ends: close it now. */
  while (fl->live) dyn__conn_close(fl->live, DYN_ECLOSED, "closing");
  uv_close((uv_handle_t *)&fl->prepare, NULL);
}

dyn__conn_t *dyn__conn_new(uv_loop_t *loop, dyn__flusher_t *fl, int is_pipe,
                           uint32_t max_frame, dyn__frame_fn on_frame,
                           dyn__close_fn on_close, void *owner) {
  dyn__conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  int rc = is_pipe ? uv_pipe_init(loop, &c->h.pipe, 0)
                   : uv_tcp_init(loop, &c->h.tcp);
  if (rc) {
    free(c);
    return NULL;
  }
  c->h.handle.data = c;
  c->flusher = fl;
  c->max_frame = max_frame;
  c->on_frame = on_frame;
  c->on_close = on_close;
  c->owner = owner;
  dyn__buf_init(&c->in);
  dyn__buf_init(&c->out);
  dyn__buf_init(&c->inflight);
  snprintf(c->peer, sizeof c->peer, "%s", is_pipe ? "unix socket" : "?");
  c->live_next = fl->live;
  if (fl->live) fl->live->live_prev = c;
  fl->live = c;
  return c;
}

static void on_handle_closed(uv_handle_t *h) {
  dyn__conn_t *c = h->data;
  dyn__buf_free(&c->in);
  dyn__buf_free(&c->out);
  dyn__buf_free(&c->inflight);
  free(c);
}

void dyn__conn_close(dyn__conn_t *c, int status, const char *why) {
  if (c->closing) return;
  c->closing = 1;
  flusher_unlink(c);
  if (c->live_prev) c->live_prev->live_next = c->live_next;
  else c->flusher->live = c->live_next;
  if (c->live_next) c->live_next->live_prev = c->live_prev;
  c->live_prev = c->live_next = NULL;
  if (c->budget) {
    c->budget->used -= c->held;
    c->held = 0;
    if (c->in.cap > KEEP_IN) c->budget->freed_big = 1;
  }
  if (c->connected && !c->writing && c->out.len) {
    uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    (void)uv_try_write(&c->h.stream, &b, 1);
  }
  if (c->connected) uv_read_stop(&c->h.stream);
  /* The owner learns first, so streams fail now rather than a pass later. */
  if (c->on_close) c->on_close(c, status, why);
  uv_close(&c->h.handle, on_handle_closed);
}

void dyn__conn_close_flushed(dyn__conn_t *c, int status, const char *why) {
  if (c->closing) return;
  if (!c->connected || (!c->out.len && !c->writing)) {
    dyn__conn_close(c, status, why);
    return;
  }
  c->close_when_flushed = 1;
  flush(c);
}

size_t dyn__conn_pending(const dyn__conn_t *c) {
  return c->out.len + c->inflight.len;
}

static void on_write(uv_write_t *req, int status) {
  dyn__conn_t *c = req->data;
  c->writing = 0;
  c->inflight.len = 0;
  if (c->closing) return;
  if (status < 0) {
    dyn__conn_close(c, DYN_EDISCONNECTED, uv_strerror(status));
    return;
  }
  flush(c);
}

int dyn__write_corked(uv_stream_t *s, dyn__buf_t *out, dyn__buf_t *inflight,
                      uv_write_t *req, uv_write_cb cb) {
  size_t done = 0;
  if (out->len) {
    uv_buf_t b = uv_buf_init((char *)out->data, (unsigned)out->len);
    int n = uv_try_write(s, &b, 1);
    if (n < 0 && n != UV_EAGAIN) return n;
    if (n > 0) done = (size_t)n;
  }
  if (done == out->len) {
    out->len = 0;
    return 0;
  }
  /* Hand the rest to libuv; swap buffers so sends may keep appending. The
   * rest is written from where the socket stopped rather than moved to the
   * front: a big backlog (KV streamed in megabyte frames) would otherwise
   * be copied once more in user space for every partial write. inflight's
   * len is what the write still holds, so dyn__conn_pending stays exact. */
  dyn__buf_t t = *inflight;
  *inflight = *out;
  *out = t;
  out->len = 0;
  inflight->len -= done;
  uv_buf_t b = uv_buf_init((char *)inflight->data + done, (unsigned)inflight->len);
  int rc = uv_write(req, s, &b, 1, cb);
  return rc ? rc : 1;
}

static void flush(dyn__conn_t *c) {
  if (c->closing || !c->connected || c->writing) return;
  c->write_req.data = c;
  int rc = dyn__write_corked(&c->h.stream, &c->out, &c->inflight, &c->write_req, on_write);
  if (rc < 0) {
    dyn__conn_close(c, DYN_EDISCONNECTED, uv_strerror(rc));
    return;
  }
  if (rc == 1) {
    c->writing = 1;
    return;
  }
  if (c->close_when_flushed) dyn__conn_close(c, DYN_ECLOSED, "closed");
}

/* The eager write of a large backlog: whatever the socket takes now, the
 * rest handed to libuv at once (so that the next big send appends to an
 * empty buffer instead of behind it). It never closes the connection,
 * because its caller may be in the middle of something that closing frees
 * (a client dispatching the stream it just registered, the control plane
 * fanning a publish out over its sessions). A failed write leaves the
 * bytes queued; the flusher meets the failure again at the end of this
 * loop pass and closes from a safe place. */
static void write_now(dyn__conn_t *c) {
  if (c->closing || !c->connected || c->writing) return;
  c->write_req.data = c;
  if (dyn__write_corked(&c->h.stream, &c->out, &c->inflight, &c->write_req, on_write) == 1)
    c->writing = 1;
}

/* A big frame on an idle connection (nothing queued, no write in flight,
 * so order holds) is written from the caller's memory in one writev; the
 * bytes written, from the front, are returned, and only the rest is then
 * copied into the output buffer. Megabyte KV chunks mostly leave this way
 * instead of being copied once more in user space. A failed write returns
 * 0: the frame is queued and the flusher meets the failure. */
static size_t write_direct(dyn__conn_t *c, const uint8_t *hdr, const void *a, size_t alen,
                           const void *b, size_t blen) {
  if (DYN__FRAME_HDR + alen + blen < EAGER_FLUSH || c->closing || !c->connected ||
      c->writing || c->out.len)
    return 0;
  uv_buf_t bufs[3];
  unsigned n = 0;
  bufs[n++] = uv_buf_init((char *)hdr, DYN__FRAME_HDR);
  if (alen) bufs[n++] = uv_buf_init((char *)a, (unsigned)alen);
  if (blen) bufs[n++] = uv_buf_init((char *)b, (unsigned)blen);
  int w = uv_try_write(&c->h.stream, bufs, n);
  return w > 0 ? (size_t)w : 0;
}

int dyn__conn_send(dyn__conn_t *c, uint8_t type, uint8_t flags,
                   uint32_t stream, const void *a, size_t alen,
                   const void *b, size_t blen) {
  if (c->closing) return DYN_ECLOSED;
  if (alen + blen > c->max_frame) return DYN_ETOOBIG;
  size_t total = DYN__FRAME_HDR + alen + blen;
  /* Room first: a frame partly written could not be taken back. */
  int rc = dyn__buf_reserve(&c->out, total);
  if (rc) return rc;
  uint8_t hdr[DYN__FRAME_HDR];
  dyn__frame_header(hdr, (uint32_t)(alen + blen), stream, type, flags);
  size_t skip = write_direct(c, hdr, a, alen, b, blen);
  if (skip == total) return DYN_OK;
  /* Queue the frame from byte skip on: header, then a, then b. */
  const struct {
    const void *p;
    size_t n;
  } part[3] = {{hdr, DYN__FRAME_HDR}, {a, alen}, {b, blen}};
  for (int i = 0; i < 3; i++) {
    size_t from = skip < part[i].n ? skip : part[i].n;
    skip -= from;
    if (part[i].n > from) {
      memcpy(c->out.data + c->out.len, (const uint8_t *)part[i].p + from, part[i].n - from);
      c->out.len += part[i].n - from;
    }
  }
  if (c->out.len >= EAGER_FLUSH) write_now(c);
  if (c->out.len && !c->flush_queued) {
    c->flush_queued = 1;
    c->flush_next = c->flusher->head;
    c->flusher->head = c;
  }
  return DYN_OK;
}

/* Reads go into c->in after what it holds. While a frame bigger than a
 * read chunk is arriving, the read stops at its end: the frame is then
 * consumed whole, and the start of the next one is not moved to the front
 * of the buffer after it (a copy of nearly every byte when megabyte frames
 * stream in back to back). Small frames still arrive many to a read. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  dyn__conn_t *c = h->data;
  size_t want = READ_CHUNK, frame = 0;
  if (c->in.len >= DYN__FRAME_HDR) {
    frame = DYN__FRAME_HDR + (size_t)dyn__get_u32(c->in.data);
    if (frame > DYN__FRAME_HDR + c->max_frame || frame <= READ_CHUNK || frame <= c->in.len)
      frame = 0; /* on_read refuses one too big; small ones batch */
    else
      want = frame - c->in.len;
  }
  if (dyn__buf_reserve(&c->in, want)) {
    *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
    return;
  }
  *out = uv_buf_init((char *)c->in.data + c->in.len,
                     (unsigned)(frame ? want : c->in.cap - c->in.len));
}

void dyn__conn_set_budget(dyn__conn_t *c, dyn__inbudget_t *b) {
  if (c->budget) c->budget->used -= c->held;
  c->budget = b;
  c->held = c->in.len;
  if (b) b->used += c->held;
}

/* Counts what is left in c's read buffer, an unfinished frame, against
 * its budget, and closes c when it broke one of the budget's limits. */
static void account(dyn__conn_t *c) {
  dyn__inbudget_t *b = c->budget;
  size_t was = c->held;
  b->used = b->used - was + c->in.len;
  c->held = c->in.len;
  /* A buffer a big frame grew keeps its pages once the frame is gone:
   * give them back, or the budget would bound bytes but not memory. */
  if (c->in.cap > KEEP_IN && c->in.len <= READ_CHUNK) {
    dyn__buf_shrink(&c->in, KEEP_IN);
    b->freed_big = 1;
  }
  char why[240];
  if (b->per_conn && c->held > b->per_conn)
    snprintf(why, sizeof why,
             "holds %zu bytes of an unfinished frame, over the %zu allowed one "
             "connection (" DYN_ENV_MAX_PEER_BUFFERED ")",
             c->held, b->per_conn);
  else if (b->total && b->used > b->total && c->held > was)
    snprintf(why, sizeof why,
             "adds to unfinished frames of %zu bytes on all connections, over the %zu "
             "allowed (" DYN_ENV_MAX_BUFFERED "); it holds %zu",
             b->used, b->total, c->held);
  else
    return;
  dyn_log(DYN_LOG_WARN, "closing connection from %s: %s", c->peer, why);
  dyn__conn_send(c, DYN__F_ERROR, 0, 0, why, strlen(why), NULL, 0);
  dyn__conn_close(c, DYN_ETOOBIG, why);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  dyn__conn_t *c = s->data;
  if (nread < 0) {
    dyn__conn_close(c, DYN_EDISCONNECTED,
                    nread == UV_EOF ? "peer closed the connection"
                                    : uv_strerror((int)nread));
    return;
  }
  size_t before = c->in.len;
  c->in.len += (size_t)nread;
  c->last_read = uv_now(s->loop);
  size_t off = 0;
  while (!c->closing) {
    dyn__frame_t f;
    const char *why = NULL;
    long n = dyn__frame_decode(c->in.data + off, c->in.len - off,
                               c->max_frame, &f, &why);
    if (n == 0) break;
    if (n < 0) {
      dyn_log(DYN_LOG_WARN, "closing connection from %s: %s", c->peer, why);
      dyn__conn_close(c, (int)n, why);
      return;
    }
    off += (size_t)n;
    c->on_frame(c, &f);
  }
  if (c->closing) return;
  dyn__buf_consume(&c->in, off);
  /* What is left is the start of a frame: one that began in this read,
   * unless the buffer held its start already. */
  if (c->in.len && (off || !before)) c->frame_started = c->last_read;
  if (c->budget) account(c);
}

int dyn__conn_start(dyn__conn_t *c) {
  c->opened = c->last_read = uv_now(c->h.handle.loop);
  c->connected = 1;
  if (c->h.handle.type == UV_TCP) {
    uv_tcp_nodelay(&c->h.tcp, 1);
    watch_peer(c); /* accepted connections */
    dyn__peer_name(&c->h.tcp, c->peer);
  }
  int rc = uv_read_start(&c->h.stream, on_alloc, on_read);
  if (rc) return DYN_ESYS;
  if (c->out.len) flush(c);
  return DYN_OK;
}

static void on_connect(uv_connect_t *req, int status) {
  dyn__conn_t *c = req->data;
  if (c->closing) return;
  if (status < 0) {
    dyn__conn_close(c, DYN_ECONNECT, uv_strerror(status));
    return;
  }
  if (dyn__conn_start(c)) dyn__conn_close(c, DYN_ECONNECT, "read start failed");
}

/* Splits "host:port" (IPv6 as "[::1]:port") and resolves numerically. */
static int parse_addr(const char *target, struct sockaddr_storage *ss) {
  char host[64];
  const char *colon = strrchr(target, ':');
  if (!colon) return DYN_EINVAL;
  size_t hl = (size_t)(colon - target);
  if (hl >= sizeof host) return DYN_EINVAL;
  memcpy(host, target, hl);
  host[hl] = 0;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port <= 0 || port > 65535) return DYN_EINVAL;
  if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
    host[hl - 1] = 0;
    return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss) ? DYN_EINVAL : DYN_OK;
  }
  return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) ? DYN_EINVAL : DYN_OK;
}

int dyn__conn_connect(dyn__conn_t *c, const char *target) {
  snprintf(c->peer, sizeof c->peer, "%s", target);
  c->connect_req.data = c;
  if (c->h.handle.type == UV_NAMED_PIPE) {
    uv_pipe_connect(&c->connect_req, &c->h.pipe, target, on_connect);
    return DYN_OK;
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (parse_addr(target, &ss)) return DYN_EINVAL;
  if (uv_tcp_connect(&c->connect_req, &c->h.tcp, (struct sockaddr *)&ss, on_connect))
    return DYN_ECONNECT;
  watch_peer(c); /* bounds the connect too */
  return DYN_OK;
}

/* ---- the handshake ------------------------------------------------------ */

void dyn__conn_hello(dyn__conn_t *c, uint16_t role, uint64_t session) {
  uint8_t hello[DYN__HELLO_LEN];
  dyn__hello_encode(hello, role, session);
  dyn__conn_send(c, DYN__F_HELLO, 0, 0, hello, sizeof hello, NULL, 0);
}

int dyn__conn_hello_recv(dyn__conn_t *c, const dyn__frame_t *f, uint16_t role,
                         uint64_t session, dyn__hello_t *h) {
  int accepting = role == DYN__ROLE_SERVER;
  const char *why = NULL;
  char refusal[160];
  if (!accepting && f->type == DYN__F_ERROR) {
    snprintf(refusal, sizeof refusal, "refused: %.*s",
             (int)(f->len < 120 ? f->len : 120), (const char *)f->payload);
    why = refusal;
  } else if (dyn__hello_decode(f, h, &why) == DYN_OK &&
             h->role != (accepting ? DYN__ROLE_CLIENT : DYN__ROLE_SERVER)) {
    why = accepting ? "peer sent a server's HELLO (two servers wired together?)"
                    : "peer sent a client's HELLO (not a dynamo server?)";
  }
  if (!why) {
    c->hello_done = 1;
    if (accepting) dyn__conn_hello(c, DYN__ROLE_SERVER, session);
    return DYN_OK;
  }
  dyn_log(DYN_LOG_WARN, "closing connection %s %s: %s", accepting ? "from" : "to",
          c->peer, why);
  if (accepting) {
    dyn__conn_send(c, DYN__F_ERROR, 0, 0, why, strlen(why), NULL, 0);
    dyn__conn_close_flushed(c, DYN_EPROTO, why);
  } else {
    dyn__conn_close(c, DYN_EPROTO, why);
  }
  return DYN_EPROTO;
}
