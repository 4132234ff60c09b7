/* internal.h - the runtime's private structures, shared by its files.
 *
 * runtime.c owns the loop and the lifecycle, names.c the namespace tree,
 * server.c the listener and requests, client.c the callers' side,
 * discovery.c and events.c the front of the pluggable backends.
 */
#ifndef DYN__INTERNAL_H
#define DYN__INTERNAL_H

#include "dynamo/client.h"
#include "dynamo/discovery.h"
#include "dynamo/events.h"
#include "dynamo/metrics.h"
#include "dynamo/runtime.h"
#include "dynamo/server.h"
#include "runtime/backend.h"
#include "runtime/conn.h"
#include "common/map.h"

#define DYN__NAME_MAX 64
#define DYN__PATH_MAX (3 * DYN__NAME_MAX + 3)

struct dyn_endpoint {
  dyn_component_t *component;
  dyn_endpoint_t *next;        /* sibling in the component */
  dyn_endpoint_t *served_next; /* in rt->served while served */
  char name[DYN__NAME_MAX + 1];
  char path[DYN__PATH_MAX];
  uint16_t path_len;
  dyn_handler_fn handler;
  void *handler_ud;
  char key[DYN__PATH_MAX + 32]; /* discovery key while served */
  int served;
  /* Its requests on /metrics (metrics/endpoint_metrics.c); NULL until first served,
   * or when the registry could not make them. */
  dyn_series_t *m_requests, *m_errors, *m_inflight, *m_bytes_in, *m_bytes_out;
};

struct dyn_component {
  dyn_namespace_t *ns;
  dyn_component_t *next;
  dyn_endpoint_t *endpoints;
  char name[DYN__NAME_MAX + 1];
};

struct dyn_namespace {
  dyn_runtime_t *rt;
  dyn_namespace_t *next;
  dyn_component_t *components;
  char name[DYN__NAME_MAX + 1];
};

typedef struct dyn__peer dyn__peer_t;

struct dyn_runtime {
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  dyn__flusher_t flusher;
  char *control_socket;
  char *listen_host;
  char *advertise_host;
  int listen_port;
  uint32_t max_frame;

  /* discovery and events backends (embedded by default) */
  const dyn__discovery_ops_t *disc;
  void *disc_state;
  const dyn__events_ops_t *ev;
  void *ev_state;
  void *emb_state; /* the embedded session, when either backend uses it */
  uint64_t session;

  /* serving */
  uv_tcp_t listener;
  int listening;
  char address[96];
  dyn_endpoint_t *served;
  dyn_endpoint_t *last_ep; /* one-entry cache for the path lookup */
  struct dyn__sconn *sconns;
  unsigned nsconns, max_conns;
  dyn__inbudget_t inbudget; /* unfinished inbound frames, all callers */
  uv_timer_t sweep;         /* closes callers that stall (server.c) */
  int sweep_ready;
  unsigned stall_ms;
  uint32_t min_frame_rate;
  size_t inflight;
  int draining;

  /* calling */
  dyn__peer_t *peers;
  struct dyn__suspect *suspects; /* addresses whose connection just died */
  uint64_t next_request_id;

  dyn_namespace_t *namespaces;
  int stopping;
  int in_loop; /* > 0 while one of our uv_run calls is on the stack */

  /* shutdown, driven by the loop (see runtime.c) */
  uv_timer_t grace;
  uv_idle_t drained;
  int shutdown_started, shutdown_done;
  size_t shutdown_cancelled;

  /* the blocking API's timeout timer, started and stopped per wait */
  uv_timer_t sync_timer;
  int sync_timer_ready;
};

/* names.c */
int dyn__name_valid(const char *name);
void dyn__names_free(dyn_runtime_t *rt);

/* server.c */
void dyn__server_close(dyn_runtime_t *rt);
void dyn__server_stop_sweep(dyn_runtime_t *rt);
void dyn__server_goaway(dyn_runtime_t *rt);
void dyn__server_close_conns(dyn_runtime_t *rt);
size_t dyn__server_cancel_all(dyn_runtime_t *rt);
void dyn__server_deregister_all(dyn_runtime_t *rt);
/* metrics/endpoint_metrics.c: makes ep's request-plane series in the process's
 * registry (once; a failure leaves them NULL and logs why). */
void dyn__endpoint_metrics_init(dyn_endpoint_t *ep);

/* Puts every served instance again under the current session id. */
void dyn__server_reregister_all(dyn_runtime_t *rt);

/* client.c */
void dyn__peers_close(dyn_runtime_t *rt);
dyn_runtime_t *dyn__client_runtime(const dyn_client_t *c);
void dyn__suspects_free(dyn_runtime_t *rt);

/* metrics/status_report.c: answers `dynamo status` polls (events.h). */
int dyn__status_report_start(dyn_runtime_t *rt);

/* runtime.c: run the loop once, blocking; used by the blocking API. */
void dyn__run_once(dyn_runtime_t *rt);
/* server.c tells runtime.c when the last in-flight request of a drain ended. */
void dyn__drained(dyn_runtime_t *rt);
#endif
