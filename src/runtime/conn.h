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
  uint64_t opened, last_read; /* loop time, ms: for stalled-peer sweeps */
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
