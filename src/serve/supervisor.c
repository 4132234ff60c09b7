/* supervisor.c - worker processes: spawning, output, restarts, shutdown.
 *
 * A worker is a slot ("Backend.0") with a command line; a run is one
 * process started for it. A run outlives its process until both output
 * pipes reach EOF, so that the last lines a crashing worker printed still
 * come out, and a restart does not wait for them.
 *
 * Every run is spawned detached: in its own session and process group, so
 * that a Ctrl-C in the terminal reaches the supervisor alone (which then
 * stops the graph in order), and so that one kill(-pgid) reaches the worker
 * and everything it started. Groups are remembered until they are empty;
 * "the graph has stopped" means every group is empty and no orphan that
 * escaped its group is left (see proc.c).
 */
#include "serve/supervisor.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dynamo/runtime.h"
#include "dynamo/status.h"
#include "serve/env.h"
#include "serve/proc.h"

#define LINE_MAX_BYTES 65536 /* a longer line is cut into pieces */
#define CRASH_MAX 64         /* bound on remembered crash times */
#define POLL_RUNNING_MS 1000 /* reaping orphans while the graph runs */
#define POLL_STOPPING_MS 50  /* watching groups empty during shutdown */
#define KILL_WAIT_MS 5000    /* after SIGKILL, how long to wait for the kernel */

typedef struct worker worker_t;
typedef struct run run_t;

typedef struct stream {
  uv_pipe_t pipe;
  run_t *run;
  int fd; /* where the lines go: 1 or 2 */
  char *line;
  size_t len;
} stream_t;

struct run {
  run_t *next;
  worker_t *w;
  uv_process_t proc;
  stream_t out, err;
  int open; /* handles not yet closed */
  pid_t pid;
  int exited;
  uint64_t started_ms;
};

struct worker {
  dyn__supervisor_t *sup;
  char *label;
  char *prefix; /* "[label] " */
  size_t prefix_len;
  char **argv;
  char **env;
  run_t *run; /* the live process, if any */
  uv_timer_t restart;
  uint64_t crashes[CRASH_MAX]; /* uv_now() of recent exits */
  size_t ncrashes;
  int streak; /* restarts since the worker last ran for a whole window */
};

typedef struct group {
  pid_t pgid;
  int leader_exited;
} group_t;

enum { S_IDLE, S_RUNNING, S_STOPPING, S_KILLING, S_DONE };

struct dyn__supervisor {
  uv_loop_t *loop;
  dyn__sup_options_t opt;
  worker_t **workers;
  size_t nworkers;
  run_t *runs; /* every run whose handles are not all closed */
  group_t *groups;
  size_t ngroups, groups_cap;
  uv_signal_t sigint, sigterm, sighup;
  uv_timer_t poll, grace, killwait;
  int open; /* supervisor-level handles not yet closed */
  int state;
  int exit_code;
  int escaped_termed; /* orphans outside any group got their SIGTERM */
  pid_t *skip;        /* scratch for live_pids() */
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  /* Straight to the fd, like the workers' lines, so the two never reorder. */
  fflush(stderr);
  ssize_t w = write(2, line, (size_t)n);
  (void)w;
}

static void describe_exit(char *buf, size_t len, int64_t status, int sig) {
  if (sig) snprintf(buf, len, "signal %d, %s", sig, strsignal(sig));
  else snprintf(buf, len, "exit status %lld", (long long)status);
}

/* ---- output ----------------------------------------------------------- */

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      /* Someone made our stdout non-blocking; wait rather than drop. */
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      if (poll(&pfd, 1, 1000) <= 0) return;
    } else {
      return; /* EPIPE and the like: nobody is reading, so nothing to do */
    }
  }
}

/* One write per line (up to a size) keeps lines of different workers whole
 * even where several processes share the terminal. */
static void emit(stream_t *st, const char *data, size_t n) {
  worker_t *w = st->run->w;
  size_t total = w->prefix_len + n + 1;
  char small[4096];
  char *buf = total <= sizeof small ? small : malloc(total);
  if (!buf) {
    write_all(st->fd, w->prefix, w->prefix_len);
    write_all(st->fd, data, n);
    write_all(st->fd, "\n", 1);
    return;
  }
  memcpy(buf, w->prefix, w->prefix_len);
  memcpy(buf + w->prefix_len, data, n);
  buf[total - 1] = '\n';
  write_all(st->fd, buf, total);
  if (buf != small) free(buf);
}

static void flush_partial(stream_t *st) {
  if (st->len) emit(st, st->line, st->len);
  st->len = 0;
}

static void take_output(stream_t *st, const char *p, size_t n) {
  while (n) {
    const char *nl = memchr(p, '\n', n);
    size_t chunk = nl ? (size_t)(nl - p) : n;
    if (nl && !st->len) {
      emit(st, p, chunk); /* the common case: a whole line, no copy */
    } else {
      /* Buffered until its newline; a line longer than the buffer goes out
       * in pieces, each with the prefix. */
      const char *q = p;
      for (size_t left = chunk; left;) {
        size_t room = LINE_MAX_BYTES - st->len;
        size_t take = left < room ? left : room;
        memcpy(st->line + st->len, q, take);
        st->len += take;
        q += take;
        left -= take;
        if (st->len == LINE_MAX_BYTES) flush_partial(st);
      }
      if (nl) flush_partial(st);
    }
    size_t used = chunk + (nl ? 1 : 0);
    p += used;
    n -= used;
  }
}

static char readbuf[65536]; /* one loop thread, and reads are consumed at once */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  *buf = uv_buf_init(readbuf, sizeof readbuf);
}

static void run_handle_closed(uv_handle_t *h);

static void close_stream(stream_t *st) {
  if (uv_is_closing((uv_handle_t *)&st->pipe)) return;
  flush_partial(st);
  uv_close((uv_handle_t *)&st->pipe, run_handle_closed);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  stream_t *st = (stream_t *)s;
  if (n > 0) take_output(st, buf->base, (size_t)n);
  else if (n < 0) close_stream(st); /* EOF: the group has let go of the pipe */
}

/* ---- runs ------------------------------------------------------------- */

static void check_stopped(dyn__supervisor_t *s);
static void begin_shutdown(dyn__supervisor_t *s, int exit_code);
static void schedule_restart(worker_t *w, int64_t status, int sig, uint64_t ran_ms);

static void run_handle_closed(uv_handle_t *h) {
  run_t *r = h->data;
  if (--r->open > 0) return;
  dyn__supervisor_t *s = r->w->sup;
  for (run_t **p = &s->runs; *p; p = &(*p)->next) {
    if (*p == r) {
      *p = r->next;
      break;
    }
  }
  free(r->out.line);
  free(r->err.line);
  free(r);
}

static group_t *find_group(dyn__supervisor_t *s, pid_t pgid) {
  for (size_t i = 0; i < s->ngroups; i++)
    if (s->groups[i].pgid == pgid) return &s->groups[i];
  return NULL;
}

static int add_group(dyn__supervisor_t *s, pid_t pgid) {
  if (s->ngroups == s->groups_cap) {
    size_t cap = s->groups_cap ? s->groups_cap * 2 : 16;
    group_t *g = realloc(s->groups, cap * sizeof *g);
    if (!g) return DYN_ENOMEM;
    s->groups = g;
    s->groups_cap = cap;
  }
  s->groups[s->ngroups++] = (group_t){pgid, 0};
  return DYN_OK;
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig) {
  run_t *r = p->data;
  worker_t *w = r->w;
  dyn__supervisor_t *s = w->sup;
  r->exited = 1;
  if (w->run == r) w->run = NULL;
  uv_close((uv_handle_t *)p, run_handle_closed);
  group_t *g = find_group(s, r->pid);
  if (g) g->leader_exited = 1;
  if (s->state == S_RUNNING) {
    /* Whatever the worker started dies with it: a restarted worker must
     * not find its predecessor's engine still holding the GPU. */
    if (kill(-r->pid, SIGKILL) && errno != ESRCH)
      dyn_log(DYN_LOG_WARN, "serve: cannot kill the group of %s: %s", w->label, strerror(errno));
    schedule_restart(w, status, sig, uv_now(s->loop) - r->started_ms);
  } else {
    check_stopped(s);
  }
}

static int spawn(worker_t *w) {
  dyn__supervisor_t *s = w->sup;
  run_t *r = calloc(1, sizeof *r);
  if (!r) return UV_ENOMEM;
  r->out.line = malloc(LINE_MAX_BYTES);
  r->err.line = malloc(LINE_MAX_BYTES);
  if (!r->out.line || !r->err.line) {
    free(r->out.line);
    free(r->err.line);
    free(r);
    return UV_ENOMEM;
  }
  r->w = w;
  r->out.run = r->err.run = r;
  r->out.fd = 1;
  r->err.fd = 2;
  uv_pipe_init(s->loop, &r->out.pipe, 0);
  uv_pipe_init(s->loop, &r->err.pipe, 0);
  r->out.pipe.data = r->err.pipe.data = r->proc.data = r;
  r->open = 3;
  r->next = s->runs;
  s->runs = r;

  uv_stdio_container_t stdio[3] = {
      {.flags = UV_IGNORE}, /* /dev/null: a worker never reads our terminal */
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->out.pipe},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->err.pipe},
  };
  uv_process_options_t opt = {
      .exit_cb = on_exit_cb,
      .file = w->argv[0],
      .args = w->argv,
      .env = w->env,
      .flags = UV_PROCESS_DETACHED,
      .stdio_count = 3,
      .stdio = stdio,
  };
  uv_update_time(s->loop); /* started_ms must be now, not the last loop pass */
  int rc = uv_spawn(s->loop, &r->proc, &opt);
  if (!rc) rc = add_group(s, r->proc.pid) ? UV_ENOMEM : 0;
  if (rc) {
    if (r->proc.pid > 0) kill(-r->proc.pid, SIGKILL);
    r->exited = 1;
    uv_close((uv_handle_t *)&r->proc, run_handle_closed);
    close_stream(&r->out);
    close_stream(&r->err);
    return rc;
  }
  r->pid = r->proc.pid;
  r->started_ms = uv_now(s->loop);
  uv_read_start((uv_stream_t *)&r->out.pipe, on_alloc, on_read);
  uv_read_start((uv_stream_t *)&r->err.pipe, on_alloc, on_read);
  w->run = r;
  dyn_log(DYN_LOG_INFO, "serve: started %s as pid %d", w->label, (int)r->pid);
  return 0;
}

/* ---- restarts --------------------------------------------------------- */

static void on_restart(uv_timer_t *t) {
  worker_t *w = t->data;
  if (w->sup->state != S_RUNNING) return;
  int rc = spawn(w);
  if (rc) {
    say("dynamo serve: cannot restart %s: %s (%s)", w->label, uv_strerror(rc), w->argv[0]);
    /* Counted like a crash: a missing binary stops the graph after the
     * usual few tries, a passing shortage (EAGAIN) gets another go. */
    schedule_restart(w, 127, 0, 0);
  }
}

static void schedule_restart(worker_t *w, int64_t status, int sig, uint64_t ran_ms) {
  dyn__supervisor_t *s = w->sup;
  uint64_t now = uv_now(s->loop);
  uint64_t window = (uint64_t)(s->opt.crash_window_s * 1000);
  size_t keep = 0;
  for (size_t i = 0; i < w->ncrashes; i++)
    if (now - w->crashes[i] < window) w->crashes[keep++] = w->crashes[i];
  w->ncrashes = keep;
  if (w->ncrashes == CRASH_MAX) memmove(w->crashes, w->crashes + 1, --w->ncrashes * sizeof *w->crashes);
  w->crashes[w->ncrashes++] = now;
  char why[96];
  describe_exit(why, sizeof why, status, sig);
  if ((int)w->ncrashes >= s->opt.crash_limit) {
    say("dynamo serve: %s keeps crashing (%s); stopping the graph", w->label, why);
    say("dynamo serve: it exited %zu times within %g s", w->ncrashes, s->opt.crash_window_s);
    begin_shutdown(s, 1);
    return;
  }
  /* A worker that ran a whole window before dying starts over at the
   * shortest delay; one that dies over and over waits longer each time. */
  if (ran_ms >= window) w->streak = 0;
  double delay = s->opt.backoff_first_s;
  for (int i = 0; i < w->streak && delay < s->opt.backoff_max_s; i++) delay *= 2;
  if (delay > s->opt.backoff_max_s) delay = s->opt.backoff_max_s;
  w->streak++;
  say("dynamo serve: %s exited (%s); restarting in %g s", w->label, why, delay);
  uv_timer_start(&w->restart, on_restart, (uint64_t)(delay * 1000), 0);
}

/* ---- shutdown --------------------------------------------------------- */

/* The pids libuv still waits for; orphan reaping must leave them alone.
 * At most one live run per worker, so s->skip (nworkers long) holds them. */
static size_t live_pids(dyn__supervisor_t *s) {
  size_t n = 0;
  for (run_t *r = s->runs; r && n < s->nworkers; r = r->next)
    if (!r->exited && r->pid > 0) s->skip[n++] = r->pid;
  return n;
}

static size_t prune_groups(dyn__supervisor_t *s) {
  size_t keep = 0;
  for (size_t i = 0; i < s->ngroups; i++)
    if (!s->groups[i].leader_exited || dyn__proc_group_alive(s->groups[i].pgid))
      s->groups[keep++] = s->groups[i];
  s->ngroups = keep;
  return keep;
}

static void signal_groups(dyn__supervisor_t *s, int sig) {
  for (size_t i = 0; i < s->ngroups; i++)
    if (kill(-s->groups[i].pgid, sig) && errno != ESRCH)
      dyn_log(DYN_LOG_WARN, "serve: kill(-%d, %d): %s", (int)s->groups[i].pgid, sig,
              strerror(errno));
}

static void close_if_open(uv_handle_t *h, uv_close_cb cb) {
  if (!uv_is_closing(h)) uv_close(h, cb);
}

static void sup_handle_closed(uv_handle_t *h) {
  dyn__supervisor_t *s = h->data;
  s->open--;
}

static void finish(dyn__supervisor_t *s) {
  if (s->state == S_DONE) return;
  s->state = S_DONE;
  size_t nskip = live_pids(s);
  pid_t *skip = s->skip;
  /* Last sweep: anything still ours is killed, not left running. */
  size_t left = dyn__proc_signal_children(SIGKILL, skip, nskip);
  signal_groups(s, SIGKILL);
  if (left || prune_groups(s))
    say("dynamo serve: %zu process(es) would not die; they were sent SIGKILL", left + s->ngroups);
  dyn__proc_reap_orphans(skip, nskip);
  for (run_t *r = s->runs; r; r = r->next) {
    if (!uv_is_closing((uv_handle_t *)&r->proc)) uv_close((uv_handle_t *)&r->proc, run_handle_closed);
    close_stream(&r->out);
    close_stream(&r->err);
  }
  for (size_t i = 0; i < s->nworkers; i++) uv_timer_stop(&s->workers[i]->restart);
  uv_timer_stop(&s->poll);
  uv_timer_stop(&s->grace);
  uv_timer_stop(&s->killwait);
  uv_stop(s->loop);
}

static void on_killwait(uv_timer_t *t) { finish(t->data); }

static void kill_all(dyn__supervisor_t *s) {
  if (s->state >= S_KILLING) return;
  s->state = S_KILLING;
  size_t nskip = live_pids(s);
  pid_t *skip = s->skip;
  size_t groups = prune_groups(s);
  signal_groups(s, SIGKILL);
  dyn__proc_signal_children(SIGKILL, skip, nskip);
  if (groups) say("dynamo serve: killing %zu worker process group(s)", groups);
  uv_timer_start(&s->killwait, on_killwait, KILL_WAIT_MS, 0);
  check_stopped(s);
}

/* Done when every group is empty and no orphan of ours is alive. */
static void check_stopped(dyn__supervisor_t *s) {
  if (s->state != S_STOPPING && s->state != S_KILLING) return;
  size_t nskip = live_pids(s);
  pid_t *skip = s->skip;
  dyn__proc_reap_orphans(skip, nskip);
  if (prune_groups(s)) return;
  /* The groups are gone; what is left escaped them (setsid). It never got
   * the SIGTERM, so it gets one now, and the rest of the grace period. */
  int sig = s->state == S_KILLING ? SIGKILL : s->escaped_termed ? 0 : SIGTERM;
  size_t escaped = dyn__proc_signal_children(sig, skip, nskip);
  if (sig == SIGTERM) s->escaped_termed = 1;
  if (!escaped) finish(s);
}

static void on_poll(uv_timer_t *t) {
  dyn__supervisor_t *s = t->data;
  if (s->state == S_RUNNING) {
    size_t nskip = live_pids(s);
    dyn__proc_reap_orphans(s->skip, nskip);
    prune_groups(s);
  } else {
    check_stopped(s);
  }
}

static void on_grace(uv_timer_t *t) {
  dyn__supervisor_t *s = t->data;
  say("dynamo serve: the grace period (%g s) is over", s->opt.grace_s);
  kill_all(s);
}

static void begin_shutdown(dyn__supervisor_t *s, int exit_code) {
  if (exit_code > s->exit_code) s->exit_code = exit_code;
  if (s->state != S_RUNNING && s->state != S_IDLE) return;
  s->state = S_STOPPING;
  for (size_t i = 0; i < s->nworkers; i++) uv_timer_stop(&s->workers[i]->restart);
  prune_groups(s);
  signal_groups(s, SIGTERM);
  uv_timer_start(&s->grace, on_grace, (uint64_t)(s->opt.grace_s * 1000), 0);
  uv_timer_start(&s->poll, on_poll, POLL_STOPPING_MS, POLL_STOPPING_MS);
  check_stopped(s);
}

static const char *signame(int signum) {
  return signum == SIGINT ? "SIGINT" : signum == SIGTERM ? "SIGTERM" : signum == SIGHUP ? "SIGHUP" : "signal";
}

static void on_signal(uv_signal_t *h, int signum) {
  dyn__supervisor_t *s = h->data;
  if (s->state == S_RUNNING) {
    say("dynamo serve: %s: stopping %zu worker process(es), waiting up to %g s (%s again to "
        "kill them now)", signame(signum), live_pids(s), s->opt.grace_s, signame(signum));
    begin_shutdown(s, 0);
  } else if (s->state == S_STOPPING) {
    say("dynamo serve: %s again: killing the workers now", signame(signum));
    kill_all(s);
  }
}

/* ---- the supervisor --------------------------------------------------- */

int dyn__sup_new(uv_loop_t *loop, const dyn__sup_options_t *opt, dyn__supervisor_t **out) {
  dyn__supervisor_t *s = calloc(1, sizeof *s);
  if (!s) return DYN_ENOMEM;
  s->loop = loop;
  if (opt) s->opt = *opt;
  if (!opt || s->opt.grace_s < 0) s->opt.grace_s = 10;
  if (s->opt.backoff_first_s <= 0) s->opt.backoff_first_s = 0.5;
  if (s->opt.backoff_max_s <= 0) s->opt.backoff_max_s = 8;
  if (s->opt.crash_limit <= 0) s->opt.crash_limit = 5;
  if (s->opt.crash_window_s <= 0) s->opt.crash_window_s = 60;
  *out = s;
  return DYN_OK;
}

int dyn__sup_add(dyn__supervisor_t *s, const char *label, char *const *argv, char *const *env) {
  worker_t **ws = realloc(s->workers, (s->nworkers + 1) * sizeof *ws);
  if (!ws) return DYN_ENOMEM;
  s->workers = ws;
  worker_t *w = calloc(1, sizeof *w);
  if (!w) return DYN_ENOMEM;
  w->sup = s;
  w->label = strdup(label);
  w->prefix_len = strlen(label) + 3;
  w->prefix = malloc(w->prefix_len + 1);
  w->argv = dyn__strv_dup(argv);
  w->env = dyn__strv_dup(env);
  if (!w->label || !w->prefix || !w->argv || !w->env) {
    free(w->label);
    free(w->prefix);
    dyn__strv_free(w->argv);
    dyn__strv_free(w->env);
    free(w);
    return DYN_ENOMEM;
  }
  snprintf(w->prefix, w->prefix_len + 1, "[%s] ", label);
  s->workers[s->nworkers++] = w;
  return DYN_OK;
}

int dyn__sup_run(dyn__supervisor_t *s) {
  uv_loop_t *loop = s->loop;
  s->skip = calloc(s->nworkers + 1, sizeof *s->skip);
  if (!s->skip) return 1;
  uv_signal_t *sigs[] = {&s->sigint, &s->sigterm, &s->sighup};
  int signums[] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(loop, sigs[i]);
    sigs[i]->data = s;
    uv_signal_start(sigs[i], on_signal, signums[i]);
    s->open++;
  }
  uv_timer_t *timers[] = {&s->poll, &s->grace, &s->killwait};
  for (int i = 0; i < 3; i++) {
    uv_timer_init(loop, timers[i]);
    timers[i]->data = s;
    s->open++;
  }
  for (size_t i = 0; i < s->nworkers; i++) {
    uv_timer_init(loop, &s->workers[i]->restart);
    s->workers[i]->restart.data = s->workers[i];
    s->open++;
  }
  /* Orphans of the graph come to us, not to init, so that none is missed
   * at shutdown. */
  if (dyn__proc_become_subreaper())
    dyn_log(DYN_LOG_WARN, "serve: cannot become a subreaper: %s", strerror(errno));

  s->state = S_RUNNING;
  for (size_t i = 0; i < s->nworkers; i++) {
    worker_t *w = s->workers[i];
    int rc = spawn(w);
    if (rc) {
      say("dynamo serve: cannot start %s: %s (%s)", w->label, uv_strerror(rc), w->argv[0]);
      begin_shutdown(s, 1);
      break;
    }
  }
  if (s->state == S_RUNNING) {
    uv_timer_start(&s->poll, on_poll, POLL_RUNNING_MS, POLL_RUNNING_MS);
    if (s->opt.on_started) s->opt.on_started(s->opt.arg);
  }
  if (s->state != S_DONE) uv_run(loop, UV_RUN_DEFAULT);
  finish(s); /* in case the loop ran dry without it */

  for (int i = 0; i < 3; i++) close_if_open((uv_handle_t *)sigs[i], sup_handle_closed);
  for (int i = 0; i < 3; i++) close_if_open((uv_handle_t *)timers[i], sup_handle_closed);
  for (size_t i = 0; i < s->nworkers; i++) {
    uv_handle_t *h = (uv_handle_t *)&s->workers[i]->restart;
    h->data = s;
    close_if_open(h, sup_handle_closed);
  }
  /* Other handles (the control plane) keep the loop alive, so run it only
   * until ours have closed; a closing handle means no blocking poll. */
  while (s->open > 0 || s->runs) uv_run(loop, UV_RUN_ONCE);
  return s->exit_code;
}

void dyn__sup_free(dyn__supervisor_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nworkers; i++) {
    worker_t *w = s->workers[i];
    free(w->label);
    free(w->prefix);
    dyn__strv_free(w->argv);
    dyn__strv_free(w->env);
    free(w);
  }
  free(s->workers);
  free(s->groups);
  free(s->skip);
  free(s);
}
