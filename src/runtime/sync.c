/* sync.c - the blocking client API for plain C programs.
 *
 * It rides on the callback API and drives the runtime's loop on the calling
 * thread until the next message arrives: no helper thread, so a unary call
 * costs one write, one poll and one read, as a hand-written client would.
 * Messages that arrive together are queued in one buffer as
 * [u32 len][bytes] records.
 */
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

struct dyn_sync_stream {
  dyn_runtime_t *rt;
  dyn_stream_t *s; /* NULL once done */
  dyn__buf_t q;
  size_t head;       /* next unread record in q */
  size_t last_taken; /* bytes of q handed out last time */
  int done;
  int status;
  char *error;
};

static void on_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  dyn_sync_stream_t *ss = ud;
  uint8_t hdr[4];
  dyn__put_u32(hdr, (uint32_t)len);
  if (dyn__buf_append(&ss->q, hdr, 4) || dyn__buf_append(&ss->q, data, len)) {
    dyn_stream_cancel(s); /* out of memory: fail loudly rather than lose data */
  }
}

static void on_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  dyn_sync_stream_t *ss = ud;
  ss->s = NULL;
  ss->done = 1;
  ss->status = status;
  if (status != DYN_OK) ss->error = strdup(message ? message : dyn_strerror(status));
}

int dyn_client_call(dyn_client_t *c, const dyn_call_options_t *opt, const void *body,
                    size_t len, dyn_sync_stream_t **out) {
  dyn_sync_stream_t *ss = calloc(1, sizeof *ss);
  if (!ss) return DYN_ENOMEM;
  ss->rt = dyn__client_runtime(c);
  dyn__buf_init(&ss->q);
  static const dyn_stream_callbacks_t cb = {on_data, on_done};
  int rc = dyn_client_generate(c, opt, body, len, &cb, ss, &ss->s);
  if (rc) {
    free(ss);
    return rc;
  }
  *out = ss;
  return DYN_OK;
}

static void on_timeout(uv_timer_t *t) { *(int *)t->data = 1; }

/* Drives the loop until a message, the end, or timeout_ms (< 0: none). One
 * timer per runtime, started and stopped per wait: no handle to close and
 * no extra loop pass per call. */
static void wait_for_data(dyn_sync_stream_t *ss, int timeout_ms) {
  dyn_runtime_t *rt = ss->rt;
  int expired = 0;
  if (timeout_ms >= 0 && ss->head == ss->q.len && !ss->done) {
    if (!rt->sync_timer_ready) {
      uv_timer_init(rt->loop, &rt->sync_timer);
      rt->sync_timer_ready = 1;
    }
    rt->sync_timer.data = &expired;
    /* From now, not from the loop's last pass (the caller may have worked
     * since). The repeat matters when the timer fires before the loop
     * polls (timeout 0, say): the poll would otherwise wait for I/O with
     * no timeout, perhaps forever; it is stopped below. */
    uv_update_time(rt->loop);
    uv_timer_start(&rt->sync_timer, on_timeout, (uint64_t)timeout_ms, 1);
  }
  while (ss->head == ss->q.len && !ss->done && !expired) dyn__run_once(rt);
  if (rt->sync_timer_ready) uv_timer_stop(&rt->sync_timer);
}

int dyn_sync_next(dyn_sync_stream_t *ss, const void **data, size_t *len, int timeout_ms) {
  /* Drop the record handed out last time. */
  ss->head += ss->last_taken;
  ss->last_taken = 0;
  if (ss->head == ss->q.len) {
    ss->q.len = 0;
    ss->head = 0;
  }
  wait_for_data(ss, timeout_ms);
  if (ss->head < ss->q.len) {
    uint32_t n = dyn__get_u32(ss->q.data + ss->head);
    *data = ss->q.data + ss->head + 4;
    *len = n;
    ss->last_taken = 4u + n;
    return DYN_OK;
  }
  if (ss->done) return ss->status == DYN_OK ? DYN_EOF : ss->status;
  return DYN_ETIMEDOUT;
}

const char *dyn_sync_error(const dyn_sync_stream_t *ss) {
  return ss->error ? ss->error : (ss->done ? dyn_strerror(ss->status) : "");
}

void dyn_sync_free(dyn_sync_stream_t *ss) {
  if (!ss) return;
  if (ss->s) dyn_stream_cancel(ss->s);
  dyn__buf_free(&ss->q);
  free(ss->error);
  free(ss);
}
