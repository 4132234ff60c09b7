/* dynamo/runtime.h - the distributed runtime: one per process.
 *
 * A runtime owns one libuv event loop, one TCP listener for every endpoint
 * the process serves, and one session with the discovery and event backends
 * (the embedded control plane by default). Everything else hangs off it:
 *
 *   dyn_runtime_t -> dyn_namespace_t -> dyn_component_t -> dyn_endpoint_t
 *
 * An *instance* is one endpoint served by one process; its id is the
 * process's session (lease) id, unique while the process lives.
 *
 * Threading: a runtime and everything reached from it belongs to the thread
 * that drives its loop. Nothing here takes a lock. Work that blocks goes to
 * dyn_runtime_queue_work(), whose completion runs back on the loop thread.
 */
#ifndef DYNAMO_RUNTIME_H
#define DYNAMO_RUNTIME_H

#include "dynamo/export.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dynamo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_runtime dyn_runtime_t;
typedef struct dyn_namespace dyn_namespace_t;
typedef struct dyn_component dyn_component_t;
typedef struct dyn_endpoint dyn_endpoint_t;

#define DYN_DEFAULT_MAX_FRAME (16u * 1024u * 1024u)
/* The request plane's defaults against callers that hold a worker's memory
 * or connections (docs/architecture.md, "Failure semantics"). */
#define DYN_DEFAULT_MAX_CONNS 1024u
#define DYN_DEFAULT_MAX_BUFFERED (64u * 1024u * 1024u)
#define DYN_DEFAULT_MIN_FRAME_RATE (1024u * 1024u)
#define DYN_DEFAULT_STALL_MS 10000u

/* Options are plain data, kept apart from the runtime they configure.
 * dyn_runtime_options_init() fills defaults, then reads the environment:
 *   DYN_CONTROL_SOCKET   embedded control plane socket path
 *   DYN_LISTEN_HOST      address the request plane binds (127.0.0.1)
 *   DYN_LISTEN_PORT      port the request plane binds (0: any free port)
 *   DYN_ADVERTISE_HOST   address published to callers (the listen host)
 *   DYN_MAX_FRAME        largest frame accepted or sent, bytes
 *   DYN_MAX_CONNS        callers' connections open at once
 *   DYN_MAX_BUFFERED     bytes of unfinished frames held, all callers
 *   DYN_MAX_PEER_BUFFERED  the same, one connection
 *   DYN_MIN_FRAME_RATE   bytes/s a caller's frame must arrive at, at least
 *   DYN_STALL_MS         how long a frame or the HELLO may take, at least
 *   ETCD_ENDPOINTS       discovery on etcd ("http://host:2379[,...]")
 *   NATS_SERVER          events on NATS ("nats://host:4222")
 * Either backend left unset is served by the embedded control plane. With
 * etcd, the request plane listens on all interfaces unless DYN_LISTEN_HOST
 * says otherwise, and advertises DYN_ADVERTISE_HOST or, failing that, the
 * machine's first non-loopback IPv4 address.
 */
typedef struct dyn_runtime_options {
  const char *control_socket; /* NULL: dyn_control_default_path() */
  const char *listen_host;
  int listen_port;
  const char *advertise_host; /* NULL: listen_host */
  uint32_t max_frame;
  /* What one process grants its callers on the request plane; 0 takes the
   * default. A connection over max_conns closes the longest-idle one with
   * no open stream, or is refused with an ERROR frame when every one is
   * busy. Bytes of unfinished frames count against max_peer_buffered per
   * connection and max_buffered for all together: a connection over its
   * share, or any that adds to a total over max_buffered, is closed. A
   * frame must arrive whole within max(stall_ms, its size / min_frame_rate)
   * of its first byte; so must the HELLO, within stall_ms. */
  unsigned max_conns;         /* DYN_DEFAULT_MAX_CONNS */
  size_t max_buffered;        /* DYN_DEFAULT_MAX_BUFFERED */
  size_t max_peer_buffered;   /* one whole frame: max_frame + its header */
  uint32_t min_frame_rate;    /* bytes/s; DYN_DEFAULT_MIN_FRAME_RATE */
  unsigned stall_ms;          /* DYN_DEFAULT_STALL_MS */
  const char *etcd_endpoints; /* NULL: embedded discovery */
  const char *nats_url;       /* NULL: embedded events */
  uv_loop_t *loop; /* NULL: the runtime creates and owns its loop */
} dyn_runtime_options_t;

DYN_EXTERN void dyn_runtime_options_init(dyn_runtime_options_t *opts);

/* Connects to the control plane (blocking until it answers or fails) and
 * opens the session. Fails with DYN_ECONTROL naming the socket when the
 * control plane cannot be reached. opts may be NULL (defaults + env).
 * If SIGPIPE is at its default action it is set to ignored, so that a
 * peer vanishing mid-write fails one connection instead of the process. */
DYN_EXTERN int dyn_runtime_create(const dyn_runtime_options_t *opts, dyn_runtime_t **out);

/* Frees everything. Call after the loop stopped; prefer dyn_runtime_shutdown
 * first so in-flight work drains. */
DYN_EXTERN void dyn_runtime_destroy(dyn_runtime_t *rt);

/* The session id that names this process's instances. */
DYN_EXTERN uint64_t dyn_runtime_instance_id(const dyn_runtime_t *rt);
DYN_EXTERN uv_loop_t *dyn_runtime_loop(dyn_runtime_t *rt);

/* Runs the loop until dyn_runtime_stop() or dyn_runtime_shutdown(). */
DYN_EXTERN int dyn_runtime_run(dyn_runtime_t *rt);
/* Runs one non-blocking pass of the loop (for embedding in a foreign loop:
 * wait for dyn_runtime_backend_fd() to be readable or for
 * dyn_runtime_backend_timeout() ms, then call this). */
DYN_EXTERN int dyn_runtime_poll(dyn_runtime_t *rt);
DYN_EXTERN int dyn_runtime_backend_fd(dyn_runtime_t *rt);
DYN_EXTERN int dyn_runtime_backend_timeout(dyn_runtime_t *rt);
/* Sends frames queued outside the loop now (dyn_runtime_poll flushes too). */
DYN_EXTERN void dyn_runtime_flush(dyn_runtime_t *rt);
DYN_EXTERN void dyn_runtime_stop(dyn_runtime_t *rt);

/* Graceful shutdown: deregister every instance so callers stop choosing
 * this process, stop accepting connections and new requests, wait up to
 * grace_ms for in-flight requests to end, cancel the rest, then close every
 * connection and the control session.
 * Called from outside the loop, it drives the loop until done and returns
 * the number of requests that had to be cancelled (0 when all drained).
 * Called from one of the loop's callbacks (a signal handler, say), it starts
 * the shutdown and returns 0; dyn_runtime_run() returns once it is done. */
DYN_EXTERN int dyn_runtime_shutdown(dyn_runtime_t *rt, int grace_ms);

/* The first half of dyn_runtime_shutdown, for hosts that drive the loop
 * themselves (Python's asyncio): deregister, stop accepting connections and
 * reject new requests with a retryable error. In-flight requests go on;
 * call dyn_runtime_shutdown() once dyn_runtime_inflight() is 0 or the host's
 * grace period is over. */
DYN_EXTERN int dyn_runtime_drain(dyn_runtime_t *rt);

/* Number of requests being served right now, holds included. */
DYN_EXTERN size_t dyn_runtime_inflight(const dyn_runtime_t *rt);

/* Work that is not a served request (an HTTP request a frontend relays to
 * its dependencies, say) but should finish before the process goes: each
 * hold counts as one request in flight until its release, so a shutdown
 * drains it within the grace period like any request. */
DYN_EXTERN void dyn_runtime_hold(dyn_runtime_t *rt);
DYN_EXTERN void dyn_runtime_release(dyn_runtime_t *rt);
/* Non-zero once dyn_runtime_drain (or a shutdown) began: take no new work. */
DYN_EXTERN int dyn_runtime_draining(const dyn_runtime_t *rt);

/* 1 while this runtime's registration with discovery is live: discovery
 * holds the process's session (embedded: connected to the control plane;
 * etcd: lease granted and kept alive within its TTL) and acknowledged every
 * key the process put; else 0. A worker's /health reports readiness with
 * it: serving an endpoint only queues its registration, and once the etcd
 * lease is lost callers no longer find the worker, though it still runs. */
DYN_EXTERN int dyn_runtime_registered(const dyn_runtime_t *rt);

/* The address callers use to reach this process ("host:port"); valid after
 * the first dyn_endpoint_serve(). */
DYN_EXTERN const char *dyn_runtime_address(const dyn_runtime_t *rt);

/* Runs fn(arg) on libuv's thread pool and then done(arg, status) on the
 * loop thread: the place for blocking work a handler must not do inline. */
DYN_EXTERN int dyn_runtime_queue_work(dyn_runtime_t *rt, void (*fn)(void *arg),
                           void (*done)(void *arg, int status), void *arg);

/* Names are 1..64 characters of [A-Za-z0-9_-]. The objects are interned:
 * asking twice returns the same pointer, and the runtime frees them. */
DYN_EXTERN int dyn_runtime_namespace(dyn_runtime_t *rt, const char *name,
                          dyn_namespace_t **out);
DYN_EXTERN int dyn_namespace_component(dyn_namespace_t *ns, const char *name,
                            dyn_component_t **out);
DYN_EXTERN int dyn_component_endpoint(dyn_component_t *c, const char *name,
                           dyn_endpoint_t **out);

/* Convenience: "ns/component/endpoint" in one call. */
DYN_EXTERN int dyn_runtime_endpoint(dyn_runtime_t *rt, const char *path,
                         dyn_endpoint_t **out);

DYN_EXTERN const char *dyn_namespace_name(const dyn_namespace_t *ns);
DYN_EXTERN const char *dyn_component_name(const dyn_component_t *c);
DYN_EXTERN dyn_namespace_t *dyn_component_namespace(const dyn_component_t *c);
DYN_EXTERN const char *dyn_endpoint_name(const dyn_endpoint_t *ep);
/* "ns/component/endpoint" */
DYN_EXTERN const char *dyn_endpoint_path(const dyn_endpoint_t *ep);
DYN_EXTERN dyn_component_t *dyn_endpoint_component(const dyn_endpoint_t *ep);
DYN_EXTERN dyn_runtime_t *dyn_endpoint_runtime(const dyn_endpoint_t *ep);

/* Logging to stderr, level from DYN_LOG (error, warn, info, debug). */
typedef enum { DYN_LOG_ERROR, DYN_LOG_WARN, DYN_LOG_INFO, DYN_LOG_DEBUG } dyn_log_level_t;
DYN_EXTERN void dyn_log(dyn_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
