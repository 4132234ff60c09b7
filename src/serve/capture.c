/* capture.c - run a command to completion, collecting stdout and stderr.
 *
 * The command is done when three things have happened: the process exited
 * and both pipes reached EOF. The pipes can outlive the process when it left
 * a child behind holding them; a short linger timer then closes them so
 * that a stray grandchild cannot hang `dynamo serve` before it even starts.
 */
#include "serve/capture.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"

#define LINGER_MS 2000

typedef struct sink {
  uv_pipe_t pipe;
  char *buf;
  size_t len, cap;
  int oom;
  struct job *job;
} sink_t;

typedef struct job {
  uv_process_t proc;
  uv_timer_t timer;
  sink_t out, err;
  int open; /* handles not yet closed */
  int exited;
  int64_t exit_status;
  int term_signal;
  int timed_out;
} job_t;

static void on_closed(uv_handle_t *h) {
  job_t *j = h->data;
  j->open--;
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  sink_t *s = (sink_t *)h;
  if (s->cap - s->len < 4096) {
    size_t cap = s->cap ? s->cap * 2 : 16384;
    char *b = realloc(s->buf, cap);
    if (!b) {
      s->oom = 1;
      *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
      return;
    }
    s->buf = b;
    s->cap = cap;
  }
  *buf = uv_buf_init(s->buf + s->len, (unsigned)(s->cap - s->len - 1));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  sink_t *s = (sink_t *)st;
  if (n > 0) {
    s->len += (size_t)n;
    return;
  }
  if (n < 0) close_handle((uv_handle_t *)st); /* EOF, or an error that ends the output */
}

static void on_timer(uv_timer_t *t) {
  job_t *j = t->data;
  if (!j->exited) {
    /* The deadline passed: kill it, then give the pipes LINGER_MS. */
    j->timed_out = 1;
    uv_process_kill(&j->proc, SIGKILL);
    return;
  }
  close_handle((uv_handle_t *)&j->out.pipe);
  close_handle((uv_handle_t *)&j->err.pipe);
}

static void maybe_linger(job_t *j) {
  if (j->exited && !uv_is_closing((uv_handle_t *)&j->timer))
    uv_timer_start(&j->timer, on_timer, LINGER_MS, 0);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  job_t *j = p->data;
  j->exited = 1;
  j->exit_status = status;
  j->term_signal = sig;
  close_handle((uv_handle_t *)p);
  maybe_linger(j);
}

static char *finish(sink_t *s, size_t *len) {
  char *b = s->buf ? s->buf : malloc(1);
  if (b) b[s->len] = 0;
  *len = s->len;
  return b;
}

int dyn__capture(uv_loop_t *loop, char *const *argv, char *const *env, uint64_t timeout_ms,
                 dyn__captured_t *out, int *uv_err) {
  memset(out, 0, sizeof *out);
  *uv_err = 0;
  job_t *j = calloc(1, sizeof *j);
  if (!j) return DYN_ENOMEM;
  j->out.job = j->err.job = j;
  uv_pipe_init(loop, &j->out.pipe, 0);
  uv_pipe_init(loop, &j->err.pipe, 0);
  uv_timer_init(loop, &j->timer);
  j->out.pipe.data = j->err.pipe.data = j->timer.data = j->proc.data = j;
  j->open = 3;

  uv_stdio_container_t stdio[3] = {
      {.flags = UV_IGNORE},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&j->out.pipe},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&j->err.pipe},
  };
  uv_process_options_t opt = {
      .exit_cb = on_exit_cb,
      .file = argv[0],
      .args = (char **)argv,
      .env = (char **)env,
      .stdio_count = 3,
      .stdio = stdio,
  };
  int rc = uv_spawn(loop, &j->proc, &opt);
  if (rc) {
    *uv_err = rc;
    /* libuv still wants the failed process handle closed. */
    j->open++;
    close_handle((uv_handle_t *)&j->proc);
    j->exited = 1;
  } else {
    j->open++;
    uv_read_start((uv_stream_t *)&j->out.pipe, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&j->err.pipe, on_alloc, on_read);
    if (timeout_ms) uv_timer_start(&j->timer, on_timer, timeout_ms, 0);
  }
  if (rc) {
    close_handle((uv_handle_t *)&j->out.pipe);
    close_handle((uv_handle_t *)&j->err.pipe);
  }
  /* Once both pipes are closed only the timer is left to close. */
  while (j->open > 0) {
    if (uv_is_closing((uv_handle_t *)&j->out.pipe) && uv_is_closing((uv_handle_t *)&j->err.pipe) &&
        (j->exited || rc))
      close_handle((uv_handle_t *)&j->timer);
    uv_run(loop, UV_RUN_ONCE);
  }
  int oom = j->out.oom || j->err.oom;
  out->out = finish(&j->out, &out->out_len);
  out->err = finish(&j->err, &out->err_len);
  out->exit_status = j->exit_status;
  out->term_signal = j->term_signal;
  out->timed_out = j->timed_out;
  free(j);
  if (!out->out || !out->err || oom) {
    dyn__captured_free(out);
    return DYN_ENOMEM;
  }
  return rc ? DYN_ESYS : DYN_OK;
}

void dyn__captured_free(dyn__captured_t *c) {
  free(c->out);
  free(c->err);
  c->out = c->err = NULL;
}
