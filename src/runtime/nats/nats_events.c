/* nats_events.c - the NATS events backend (dyn__events_ops_t on libnats).
 *
 * One NATS connection per runtime, driven by the runtime's libuv loop. A
 * runtime's rule is that user callbacks run on the loop's thread and take
 * no locks; libnats, left alone, reads on its own thread and calls message
 * handlers from per-subscription threads. So:
 *
 *  - The connection uses libnats's external event loop mode
 *    (natsOptions_SetEventLoop): libnats reads and writes only when we call
 *    natsConnection_ProcessReadEvent/ProcessWriteEvent, which we do from a
 *    uv_poll_t on the loop.
 *  - Subscriptions are synchronous (natsConnection_SubscribeSync): they have
 *    no delivery thread. ProcessReadEvent queues the messages it parsed in
 *    each subscription, and right after it we drain those queues with
 *    natsSubscription_NextMsg(.., 0) and call the user's callbacks, on the
 *    loop thread, with no thread hand-off on the way.
 *
 * The event-loop adapter is ours, not the one libnats ships in
 * nats/adapters/libuv.h. That one calls ProcessReadEvent from inside its own
 * poll callback, leaving no place to deliver messages after a read (the
 * only alternative was async subscriptions, i.e. libnats's threads plus a
 * uv_async_t queue: two thread hops per event). It also restarts its
 * uv_poll_t on every write request (three epoll_ctl calls per publish with
 * libuv 1.44: uv_poll_start deregisters the descriptor first), and
 * it polls libnats's own descriptor, which libnats 3.4 closes before polling
 * has stopped when it notices a dead connection on a thread other than the
 * loop's (nats.c issue #814, fixed in 3.10): the loop could then poll
 * whatever socket reuses the number. We poll a dup() of the socket instead,
 * taken while libnats holds it, and close the dup ourselves.
 *
 * libnats still runs threads of its own: a timer thread (PINGs), and on a
 * lost connection a reconnect thread, which reconnects, resends every
 * subscription and re-attaches. Those threads reach us only through the
 * four adapter callbacks, which record what libnats wants in a small
 * mutex-guarded struct and wake the loop with a uv_async_t; the loop applies
 * it. Nothing of ours runs on them, and we register no connection handlers
 * (disconnected/reconnected/closed): libnats delivers those on its async
 * thread even after natsConnection_Close() returned, when our state may be
 * gone. Connection loss and return are seen by the adapter instead (libnats
 * stops read polling when a connection dies, and attaches a new socket when
 * it reconnects).
 *
 * Writes: with SendAsap set, a publish asks for a write at once instead of
 * waking libnats's flusher thread (so there is none). We do not poll for
 * writability to serve that (the socket almost always is writable): the
 * queued bytes go out from a uv_prepare_t/uv_check_t pair, that is, in the
 * same loop pass, so a burst published in one pass leaves in one send(), as
 * the runtime's own flusher does; a publish made outside the loop goes out
 * at once. Only when the socket buffer is full do we poll for writability.
 *
 * Outages: a publish while libnats is not connected is dropped and counted
 * (dyn__nats_dropped) and returns DYN_ECONTROL, as the embedded backend does
 * while its control plane is away; one warning per outage, one line when
 * NATS is back. libnats reconnects forever, every 250 ms, and puts every
 * subscription back. While it is away we do not call libnats at all from
 * the loop (its reconnect thread holds the connection's lock through each
 * connect attempt; see catch_up()). Its reconnect buffer only catches
 * publishes that race with a connection dying on another thread; they are
 * sent after the reconnect.
 *
 * Closing first waits (bounded) until the server has every byte published
 * (drain_output()), then uses natsConnection_Close() and Destroy(), never
 * nats_Close(): that one tears down the library for the whole process
 * (other connections included, and a later open would have to re-open it).
 * libnats's global threads (timers, async callbacks, GC) stay until exit
 * and hold nothing of ours: after natsConnection_Close() returns, the
 * reconnect thread has been joined and no adapter callback comes again.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <nats/nats.h>

#include "runtime/internal.h"
#include "runtime/nats/nats_events.h"

#define CONNECT_TIMEOUT_MS 2000
#define RECONNECT_WAIT_MS 250
/* How long close() waits for the socket to take the last events. */
#define CLOSE_FLUSH_MS 1000
/* Publishes (and SUB/UNSUB) racing a connection's death on another thread
 * wait here and go out after the reconnect (see above). */
#define RECONNECT_BUF_BYTES (1024 * 1024)
/* A peer that dies without closing its socket (a cut network) is noticed
 * after dyn__nats_max_pings_out unanswered PINGs, so in about half a minute
 * (see nats_events.h). */
int64_t dyn__nats_ping_interval_ms = 10000;
int dyn__nats_max_pings_out = 3;

typedef struct nsub {
  struct nsub *next;
  natsSubscription *sub; /* NULL until made: subscribed while NATS was away */
  dyn_event_fn fn;
  void *ud;
  int dead;     /* unsubscribed; freed once no delivery walks the list */
  int released; /* libnats has been told (or never knew): free to free */
  char pattern[];
} nsub_t;

/* What libnats asked of the loop, written by the adapter callbacks on any
 * thread (they run with the connection's lock held) and read by apply(). */
typedef struct shared {
  uv_mutex_t mu;
  int new_fd;      /* our dup of a socket attached but not yet polled, or -1 */
  int reading;     /* libnats polls reads for as long as a connection lives */
  int writing;     /* libnats has output queued */
  unsigned losses; /* times read polling was removed: a connection ended */
} shared_t;

typedef struct nats_ev {
  dyn_runtime_t *rt;
  char *url;
  natsConnection *nc;
  uv_thread_t loop_thread;
  shared_t sh;

  /* loop side, touched on the loop thread only */
  uv_async_t wake;           /* another thread changed sh */
  uv_prepare_t before_poll;  /* flushes output before the loop sleeps */
  uv_check_t after_poll;     /* ... and what the poll phase's callbacks queued */
  uv_poll_t *poll;           /* the live connection's socket, NULL when none */
  int poll_fd;               /* our dup, polled by poll */
  int poll_events;
  int want_write;            /* libnats has output for the polled socket */
  int write_blocked;         /* the socket buffer was full: poll writability */
  unsigned losses_seen;
  int outage;                /* the current outage was announced */
  uint64_t dropped, dropped_before_outage;
  nsub_t *subs;
  int catch_up;              /* subscriptions wait for NATS (see catch_up()) */
  int delivering;            /* deliver() is on the stack */
  int closing;
  int handles_open;
} nats_ev_t;

static void apply(nats_ev_t *st);
static void on_poll(uv_poll_t *h, int status, int events);

/* ---- outages ------------------------------------------------------------ */

static void outage_begin(nats_ev_t *st, const char *why) {
  if (st->outage || st->closing) return;
  st->outage = 1;
  st->dropped_before_outage = st->dropped;
  dyn_log(DYN_LOG_WARN,
          "lost NATS at %s (%s); events are dropped until it is back", st->url,
          why);
}

static void outage_end(nats_ev_t *st) {
  if (!st->outage) return;
  st->outage = 0;
  dyn_log(DYN_LOG_WARN, "NATS at %s is back; %llu event(s) were dropped meanwhile",
          st->url, (unsigned long long)(st->dropped - st->dropped_before_outage));
}

static int drop(nats_ev_t *st, const char *why) {
  outage_begin(st, why);
  st->dropped++;
  return DYN_ECONTROL;
}

/* ---- the socket on the loop --------------------------------------------- */

static void free_handle(uv_handle_t *h) { free(h); }

/* uv_close() stops polling at once, after which the descriptor may be
 * closed (libuv's poll contract), so our dup goes right away. */
static void drop_poll(nats_ev_t *st) {
  if (!st->poll) return;
  uv_close((uv_handle_t *)st->poll, free_handle);
  close(st->poll_fd);
  st->poll = NULL;
  st->poll_fd = -1;
  st->write_blocked = 0;
}

static void start_poll(nats_ev_t *st, int fd) {
  uv_poll_t *p = malloc(sizeof *p);
  if (!p || uv_poll_init(st->rt->loop, p, fd) != 0) {
    /* Unpolled, the connection goes stale and libnats reconnects. */
    dyn_log(DYN_LOG_ERROR, "NATS: cannot poll the socket to %s", st->url);
    free(p);
    close(fd);
    return;
  }
  p->data = st;
  uv_poll_start(p, UV_READABLE, on_poll);
  st->poll = p;
  st->poll_fd = fd;
  st->poll_events = UV_READABLE;
  st->write_blocked = 0;
}

/* Brings the loop in line with what libnats asked for (see shared_t). Only
 * the final state counts, except that a loss in between is announced. */
static void apply(nats_ev_t *st) {
  uv_mutex_lock(&st->sh.mu);
  int fd = st->sh.new_fd;
  st->sh.new_fd = -1;
  int reading = st->sh.reading, writing = st->sh.writing;
  unsigned losses = st->sh.losses;
  uv_mutex_unlock(&st->sh.mu);

  int lost = losses != st->losses_seen;
  st->losses_seen = losses;
  if (lost || fd >= 0 || !reading) drop_poll(st);
  if (lost) outage_begin(st, "connection lost");
  if (fd >= 0) {
    if (reading && !st->closing) {
      start_poll(st, fd);
      outage_end(st);
    } else {
      close(fd); /* that connection died too before we got to it */
    }
  }
  st->want_write = writing && st->poll;
  if (!st->want_write) st->write_blocked = 0;
  int events = UV_READABLE | (st->write_blocked ? UV_WRITABLE : 0);
  if (st->poll && events != st->poll_events) {
    /* Rare (a full socket buffer): uv_poll_start costs epoll_ctl calls. */
    uv_poll_start(st->poll, events, on_poll);
    st->poll_events = events;
  }
}

/* Hands libnats's queued output to the socket. Only while libnats says it
 * has some: on an empty buffer ProcessWriteEvent mistakes send()'s 0 for a
 * closed connection and drops a healthy one (libnats 3.4). */
static void flush(nats_ev_t *st) {
  if (!st->want_write || !st->nc) return;
  apply(st); /* fresh: a reconnect may have replaced the socket */
  if (!st->want_write) return;
  natsConnection_ProcessWriteEvent(st->nc);
  /* All sent: libnats called write(false) and apply() stopped any
   * writability polling. Else the rest waits for the socket to drain. */
  if (st->want_write && st->poll && !st->write_blocked) {
    st->write_blocked = 1;
    apply(st);
  }
}

/* Frees the unsubscribed entries that libnats no longer needs to hear of. */
static void reap(nats_ev_t *st) {
  for (nsub_t **pp = &st->subs; *pp;) {
    nsub_t *s = *pp;
    if (!s->dead || !s->released) {
      pp = &s->next;
      continue;
    }
    *pp = s->next;
    if (s->sub) natsSubscription_Destroy(s->sub);
    free(s);
  }
}

/* Hands each subscription's queued messages to its callback. Callbacks may
 * publish, subscribe, unsubscribe (themselves included) or close the
 * backend: unsubscribed entries stay in the list, marked dead, until the
 * outermost delivery ends. */
static void deliver(nats_ev_t *st) {
  if (st->closing) return;
  st->delivering++;
  for (nsub_t *s = st->subs; s && !st->closing; s = s->next) {
    int pending = 0;
    if (s->dead || !s->sub || natsSubscription_GetPending(s->sub, &pending, NULL) != NATS_OK)
      continue;
    /* Only what was queued now: a callback that publishes to its own
     * subject must not keep us here. */
    for (int i = 0; i < pending && !s->dead && !st->closing; i++) {
      natsMsg *m = NULL;
      natsStatus ns = natsSubscription_NextMsg(&m, s->sub, 0);
      if (ns == NATS_SLOW_CONSUMER) {
        /* Cannot happen while reads and delivery share the loop, but if
         * libnats ever drops messages it says so once; so do we. */
        dyn_log(DYN_LOG_WARN, "NATS: events on %s were dropped (slow consumer)",
                natsSubscription_GetSubject(s->sub));
        continue;
      }
      if (ns != NATS_OK) break;
      s->fn(natsMsg_GetSubject(m), natsMsg_GetData(m),
            (size_t)natsMsg_GetDataLength(m), s->ud);
      natsMsg_Destroy(m);
    }
  }
  if (--st->delivering == 0) reap(st);
}

/* While NATS is away libnats's reconnect thread holds the connection's lock
 * for a whole connect attempt (up to CONNECT_TIMEOUT_MS against a host
 * that drops packets), and every call that takes the lock (publish,
 * subscribe, unsubscribe) would stall the loop, and the request plane
 * with it. So while we have no live socket we do not call libnats: a
 * publish is dropped, a subscription waits in our list, an unsubscription
 * is only marked; once connected again, this makes them. */
static void catch_up(nats_ev_t *st) {
  if (!st->catch_up || !st->poll || st->closing) return;
  st->catch_up = 0;
  for (nsub_t *s = st->subs; s; s = s->next) {
    if (s->dead && !s->released) {
      natsSubscription_Unsubscribe(s->sub);
      s->released = 1;
    } else if (!s->dead && !s->sub) {
      natsStatus ns = natsConnection_SubscribeSync(&s->sub, st->nc, s->pattern);
      if (ns != NATS_OK) {
        s->sub = NULL;
        st->catch_up = 1; /* again at the next reconnect */
        dyn_log(DYN_LOG_WARN, "NATS at %s refused a subscription to %s: %s", st->url,
                s->pattern, natsStatus_GetText(ns));
      }
    }
  }
  if (!st->delivering) reap(st);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  nats_ev_t *st = h->data;
  /* An error is handed to libnats as a read: it finds the failure and
   * starts reconnecting. */
  if (status < 0 || (events & UV_READABLE)) natsConnection_ProcessReadEvent(st->nc);
  if ((events & UV_WRITABLE) && h == st->poll) flush(st);
  deliver(st);
}

static void on_wake(uv_async_t *a) {
  apply(a->data);
  catch_up(a->data); /* not in apply(): that also runs inside libnats */
}

static void on_before_poll(uv_prepare_t *p) {
  catch_up(p->data);
  flush(p->data);
}

static void on_after_poll(uv_check_t *c) { flush(c->data); }

/* ---- the adapter: libnats's side, any thread ---------------------------- */

static void changed(nats_ev_t *st) {
  uv_thread_t self = uv_thread_self();
  if (uv_thread_equal(&self, &st->loop_thread)) apply(st);
  else uv_async_send(&st->wake);
}

static natsStatus ev_attach(void **user, void *loop, natsConnection *nc, natsSock sock) {
  (void)nc;
  nats_ev_t *st = loop;
  /* Taken now, while libnats holds the socket open: by the time the loop
   * gets to it the number may belong to another socket. */
  int fd = fcntl(sock, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return NATS_SYS_ERROR;
  uv_mutex_lock(&st->sh.mu);
  if (st->sh.new_fd >= 0) close(st->sh.new_fd);
  st->sh.new_fd = fd;
  st->sh.reading = 1;
  st->sh.writing = 0;
  uv_mutex_unlock(&st->sh.mu);
  *user = st;
  changed(st);
  return NATS_OK;
}

static natsStatus ev_read(void *user, bool add) {
  nats_ev_t *st = user;
  uv_mutex_lock(&st->sh.mu);
  if (!add && st->sh.reading) st->sh.losses++;
  st->sh.reading = add;
  uv_mutex_unlock(&st->sh.mu);
  changed(st);
  return NATS_OK;
}

static natsStatus ev_write(void *user, bool add) {
  nats_ev_t *st = user;
  uv_mutex_lock(&st->sh.mu);
  st->sh.writing = add;
  uv_mutex_unlock(&st->sh.mu);
  changed(st);
  return NATS_OK;
}

static natsStatus ev_detach(void *user) {
  nats_ev_t *st = user;
  uv_mutex_lock(&st->sh.mu);
  st->sh.reading = 0;
  st->sh.writing = 0;
  uv_mutex_unlock(&st->sh.mu);
  changed(st);
  return NATS_OK;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  nats_ev_t *st = h->data;
  if (--st->handles_open > 0) return;
  uv_mutex_destroy(&st->sh.mu);
  free(st->url);
  free(st);
}

/* After natsConnection_Close() (or a failed connect): nothing of libnats
 * calls us any more. Frees st once the loop has closed its handles. */
static void release(nats_ev_t *st) {
  st->closing = 1;
  apply(st); /* closes a dup still waiting */
  drop_poll(st);
  uv_close((uv_handle_t *)&st->wake, on_handle_closed);
  uv_close((uv_handle_t *)&st->before_poll, on_handle_closed);
  uv_close((uv_handle_t *)&st->after_poll, on_handle_closed);
}

static natsStatus make_options(nats_ev_t *st, natsOptions **out) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, st->url);
  if (s == NATS_OK) s = natsOptions_SetName(o, "dynamo");
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, CONNECT_TIMEOUT_MS);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(o, true);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, RECONNECT_WAIT_MS);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o, RECONNECT_BUF_BYTES);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(o, dyn__nats_ping_interval_ms);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(o, dyn__nats_max_pings_out);
  /* st stands in for the "loop": the adapter needs st, not the uv loop. */
  if (s == NATS_OK)
    s = natsOptions_SetEventLoop(o, st, ev_attach, ev_read, ev_write, ev_detach);
  if (s != NATS_OK) {
    natsOptions_Destroy(o);
    return s;
  }
  *out = o;
  return NATS_OK;
}

int dyn__nats_open(dyn_runtime_t *rt, const char *url, void **state) {
  if (!url || !*url) return DYN_EINVAL;
  nats_ev_t *st = calloc(1, sizeof *st);
  if (!st || !(st->url = strdup(url))) {
    free(st);
    return DYN_ENOMEM;
  }
  int mu_rc = uv_mutex_init(&st->sh.mu);
  /* The loop's first async handle opens its eventfd: this can run out. */
  if (mu_rc || uv_async_init(rt->loop, &st->wake, on_wake)) {
    if (!mu_rc) uv_mutex_destroy(&st->sh.mu);
    free(st->url);
    free(st);
    return DYN_ESYS;
  }
  st->rt = rt;
  st->loop_thread = uv_thread_self();
  st->sh.new_fd = -1;
  st->poll_fd = -1;
  uv_prepare_init(rt->loop, &st->before_poll);
  uv_check_init(rt->loop, &st->after_poll);
  st->wake.data = st->before_poll.data = st->after_poll.data = st;
  st->handles_open = 3;
  uv_prepare_start(&st->before_poll, on_before_poll);
  uv_check_start(&st->after_poll, on_after_poll);
  /* Flushing alone must not keep the loop alive; the wake-up handle does,
   * as the embedded backend's session does, through outages too. */
  uv_unref((uv_handle_t *)&st->before_poll);
  uv_unref((uv_handle_t *)&st->after_poll);

  /* natsConnection_Connect does the TCP connect and the INFO/CONNECT/PING
   * handshake itself, blocking, bounded by CONNECT_TIMEOUT_MS; it attaches
   * the socket (ev_attach, on this thread) before returning. */
  natsOptions *opts = NULL;
  natsStatus s = make_options(st, &opts);
  if (s == NATS_OK) {
    s = natsConnection_Connect(&st->nc, opts);
    natsOptions_Destroy(opts);
  }
  if (s != NATS_OK) {
    /* The library's last error, "(file.c:line): text", often just repeats
     * the status; add it only when it says more. */
    const char *why = natsStatus_GetText(s), *detail = nats_GetLastError(NULL);
    int more = detail && *detail && !strstr(detail, why);
    dyn_log(DYN_LOG_ERROR, "cannot reach NATS at %s: %s%s%s", url, why, more ? " - " : "",
            more ? detail : "");
    if (st->nc) natsConnection_Destroy(st->nc);
    st->nc = NULL;
    release(st); /* frees st */
    uv_run(rt->loop, UV_RUN_NOWAIT);
    return s == NATS_NO_MEMORY ? DYN_ENOMEM : DYN_ECONTROL;
  }
  dyn_log(DYN_LOG_INFO, "events on NATS at %s", url);
  *state = st;
  return DYN_OK;
}

uint64_t dyn__nats_dropped(void *state) { return ((nats_ev_t *)state)->dropped; }

/* ---- events ops --------------------------------------------------------- */

static int nats_publish(void *p, const char *subject, const void *data, size_t len) {
  nats_ev_t *st = p;
  if (st->closing) return DYN_ECLOSED;
  if (len > INT_MAX) return DYN_ETOOBIG;
  /* Fail fast while away, without touching libnats (see catch_up()):
   * buffering would replay stale events later, and grow without bound
   * over a long outage. */
  if (!st->poll || natsConnection_Status(st->nc) != NATS_CONN_STATUS_CONNECTED)
    return drop(st, "not connected");
  natsStatus s = natsConnection_Publish(st->nc, subject, data, (int)len);
  if (s == NATS_MAX_PAYLOAD) return DYN_ETOOBIG; /* the server's max_payload */
  if (s != NATS_OK) return drop(st, natsStatus_GetText(s));
  /* Inside the loop the prepare/check handles send it this pass. */
  if (!st->rt->in_loop) flush(st);
  return DYN_OK;
}

static int nats_subscribe(void *p, const char *pattern, dyn_event_fn fn, void *ud,
                          void **handle) {
  nats_ev_t *st = p;
  if (st->closing) return DYN_ECLOSED;
  size_t n = strlen(pattern);
  nsub_t *s = calloc(1, sizeof *s + n + 1);
  if (!s) return DYN_ENOMEM;
  memcpy(s->pattern, pattern, n + 1);
  if (st->poll) {
    /* Made now; libnats keeps it and sends it again after a reconnect. */
    natsStatus ns = natsConnection_SubscribeSync(&s->sub, st->nc, pattern);
    if (ns != NATS_OK) {
      free(s);
      if (ns == NATS_NO_MEMORY) return DYN_ENOMEM;
      if (ns == NATS_INVALID_SUBJECT) return DYN_EINVAL;
      dyn_log(DYN_LOG_WARN, "NATS at %s refused a subscription to %s: %s", st->url,
              pattern, natsStatus_GetText(ns));
      return DYN_ECONTROL;
    }
  } else {
    st->catch_up = 1; /* made once NATS is back */
  }
  s->fn = fn;
  s->ud = ud;
  s->next = st->subs;
  st->subs = s;
  *handle = s;
  if (!st->rt->in_loop) flush(st);
  return DYN_OK;
}

static void nats_unsubscribe(void *p, void *handle) {
  nats_ev_t *st = p;
  nsub_t *s = handle;
  if (!s || s->dead) return;
  s->dead = 1; /* deliver() skips it from now on */
  if (!s->sub) {
    s->released = 1; /* libnats never knew it */
  } else if (st->poll) {
    /* Tells the server and discards what is queued. */
    natsSubscription_Unsubscribe(s->sub);
    s->released = 1;
  } else {
    st->catch_up = 1; /* told once NATS is back, or at close */
  }
  if (!st->delivering) reap(st);
  if (!st->rt->in_loop) flush(st);
}

/* natsConnection_Close() drops what libnats has not written yet, and
 * libnats sets SO_LINGER to 0 on its sockets, so the close is a reset that
 * also drops what the kernel has not sent. The last events (a burst
 * published just before shutdown) must leave first: we write libnats's
 * buffer out and wait until the server has acknowledged every byte
 * (SIOCOUTQ), blocking, at most CLOSE_FLUSH_MS. The runtime is going away;
 * nothing else on its loop is left to delay. */
static void drain_output(nats_ev_t *st) {
  uint64_t deadline = uv_hrtime() + (uint64_t)CLOSE_FLUSH_MS * 1000000u;
  flush(st);
  while (st->poll) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) break;
    int unacked = 0;
    if (!st->want_write && (ioctl(st->poll_fd, SIOCOUTQ, &unacked) != 0 || unacked == 0))
      break;
    /* Writable while libnats has output; else a millisecond's wait. */
    struct pollfd pf = {st->poll_fd, st->want_write ? POLLOUT : 0, 0};
    int ms = (int)((deadline - now) / 1000000u) + 1;
    int r = poll(&pf, 1, st->want_write ? ms : 1);
    if (r < 0 && errno != EINTR) break;
    if (r > 0 && (pf.revents & (POLLERR | POLLHUP))) break;
    flush(st);
  }
}

static void nats_close(void *p) {
  nats_ev_t *st = p;
  if (st->closing) return;
  drain_output(st);
  st->closing = 1;
  /* Synchronous: stops polling through our callbacks (on this thread) and
   * joins a reconnect thread. A reconnect attempt in progress holds the
   * connection's lock for up to CONNECT_TIMEOUT_MS, so this can wait that
   * long while NATS is away. */
  natsConnection_Close(st->nc);
  for (nsub_t *s = st->subs; s; s = s->next) s->dead = s->released = 1;
  if (!st->delivering) reap(st); /* else deliver() does when it unwinds */
  natsConnection_Destroy(st->nc);
  st->nc = NULL;
  release(st);
}

const dyn__events_ops_t dyn__nats_events = {"nats", nats_publish, nats_subscribe,
                                            nats_unsubscribe, nats_close};
