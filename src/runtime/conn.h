/* conn.h - a framed, buffered connection over a libuv stream (TCP or Unix).
 *
 * Both planes use it: the request plane between callers and instances, and
 * the embedded control plane. It reads into one buffer and hands each whole
 * frame to its owner without copying (the payload pointer is valid only
 * during the callback). Writes are appended to an output buffer and sent by
 * the flusher right before the loop next sleeps, so a burst of responses
 * made in one loop pass leaves in one system call (as Redis does in
 * beforeSleep).
 */
#ifndef DYN__CONN_H
#define DYN__CONN_H
#include <uv.h>

#include "common/buf.h"
#include "runtime/frame.h"

typedef struct dyn__conn dyn__conn_t;
typedef struct dyn__flusher dyn__flusher_t;

/* The bytes of unfinished inbound frames that the connections sharing one
 * budget may hold in their read buffers (the request plane's callers; see
 * dyn__conn_set_budget). Whole frames are handed on and consumed in the
 * read that completes them, so only a frame still arriving counts. */
typedef struct dyn__inbudget {
  size_t used;     /* held now, all connections together */
  size_t total;    /* the most for all of them (0: no limit) */
  size_t per_conn; /* the most for one (0: no limit) */
  int freed_big;    /* a big read buffer was given back since the owner
                       last returned free memory to the system */
} dyn__inbudget_t;

/* Returns nothing; may close the connection. */
typedef void (*dyn__frame_fn)(dyn__conn_t *c, const dyn__frame_t *f);
/* Runs once, when the connection ends for any reason; the owner must drop
 * its pointer: the memory is freed later by libuv's close callback. */
typedef void (*dyn__close_fn)(dyn__conn_t *c, int status, const char *why);

struct dyn__flusher {
  uv_prepare_t prepare;
  dyn__conn_t *head; /* connections with output waiting */
  dyn__conn_t *live; /* every connection of this flusher not yet closing */
};

struct dyn__conn {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_connect_t connect_req;
  uv_write_t write_req;
  dyn__flusher_t *flusher;
  dyn__buf_t in, out, inflight;
  dyn__conn_t *flush_next;
  dyn__conn_t *live_prev, *live_next; /* flusher->live */
  dyn__frame_fn on_frame;
  dyn__close_fn on_close;
  void *owner;
  uint32_t max_frame;
  dyn__inbudget_t *budget; /* NULL: unlimited */
  size_t held;             /* what in.len counts against budget */
  /* Loop time, ms, for stalled-peer sweeps: when the connection started,
   * when it last read, and when the unfinished frame in `in` began. */
  uint64_t opened, last_read, frame_started;
  unsigned connected : 1, writing : 1, closing : 1, flush_queued : 1,
      close_when_flushed : 1, hello_done : 1;
  char peer[96]; /* "host:port" or a socket path */
};

void dyn__flusher_init(dyn__flusher_t *fl, uv_loop_t *loop);
/* Sends everything queued on every connection (outside the loop). */
void dyn__flusher_run(dyn__flusher_t *fl);
/* Sends what it can, then closes every connection still open (one left
 * flushing by dyn__conn_close_flushed, say): their owners are about to go. */
void dyn__flusher_close(dyn__flusher_t *fl);

/* Allocates a connection of the given handle type on loop. */
dyn__conn_t *dyn__conn_new(uv_loop_t *loop, dyn__flusher_t *fl, int is_pipe,
                           uint32_t max_frame, dyn__frame_fn on_frame,
                           dyn__close_fn on_close, void *owner);
/* Counts c's unfinished frames against b from now on. A connection that
 * goes over b->per_conn, or adds bytes while every connection of b holds
 * more than b->total, is closed with a log line naming it; and once a big
 * frame is consumed its read buffer shrinks, so that b bounds memory. */
void dyn__conn_set_budget(dyn__conn_t *c, dyn__inbudget_t *b);
/* After uv_accept() succeeded into c: starts reading. */
int dyn__conn_start(dyn__conn_t *c);
/* Connects to "host:port" (TCP) or a socket path (pipe); sends queued
 * before the connection is up leave once it is. Failure arrives through
 * on_close with DYN_ECONNECT and connected == 0. */
int dyn__conn_connect(dyn__conn_t *c, const char *target);

/* Queues one frame whose payload is a then b (either may be empty). */
int dyn__conn_send(dyn__conn_t *c, uint8_t type, uint8_t flags,
                   uint32_t stream, const void *a, size_t alen,
                   const void *b, size_t blen);
/* Closes now (queued output is tried once without blocking). */
void dyn__conn_close(dyn__conn_t *c, int status, const char *why);
/* Closes once queued output is written. */
void dyn__conn_close_flushed(dyn__conn_t *c, int status, const char *why);

/* The handshake (frame.h), the same on both planes. The connecting side
 * queues its HELLO (role DYN__ROLE_CLIENT) with dyn__conn_hello right after
 * dyn__conn_new; every side hands each frame to dyn__conn_hello_recv until
 * hello_done is set. The accepting side (role DYN__ROLE_SERVER) answers a
 * good HELLO with its own; each side checks that the peer holds the other
 * role, so two servers or two clients wired to each other fail at once.
 * On DYN_OK *h holds the peer's HELLO. On failure the connection is closed
 * with the reason logged: an accepting side first sends it as an ERROR
 * frame, and a connecting side takes an ERROR frame as the peer's refusal. */
void dyn__conn_hello(dyn__conn_t *c, uint16_t role, uint64_t session);
int dyn__conn_hello_recv(dyn__conn_t *c, const dyn__frame_t *f, uint16_t role,
                         uint64_t session, dyn__hello_t *h);
size_t dyn__conn_pending(const dyn__conn_t *c);

/* The corked write both connection kinds (this one and HTTP) share: writes
 * as much of out as the socket takes now and hands the rest to one
 * uv_write from inflight, swapping the buffers so that new output keeps
 * accumulating in out. Returns 0 when everything was written, 1 when a
 * uv_write is in flight (cb runs when it ends and must empty inflight), or
 * a libuv error code. */
int dyn__write_corked(uv_stream_t *s, dyn__buf_t *out, dyn__buf_t *inflight,
                      uv_write_t *req, uv_write_cb cb);
#endif
