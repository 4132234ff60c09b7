/* backend.h - the two interfaces the runtime's backends implement.
 *
 * Discovery: a session-scoped key/value registry with prefix watches.
 * Events: subject-based publish/subscribe. The embedded control plane
 * implements both over one Unix socket; etcd and NATS each implement one.
 * Callers use dynamo/discovery.h and dynamo/events.h and never see which.
 */
#ifndef DYN__BACKEND_H
#define DYN__BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "dynamo/discovery.h"
#include "dynamo/events.h"

typedef struct dyn__discovery_ops {
  const char *name;
  /* key=value for as long as this process's session lives */
  int (*put)(void *st, const char *key, const char *value);
  int (*del)(void *st, const char *key);
  /* Snapshot, DYN_WATCH_SYNCED, then changes; RESET + snapshot after a loss.
   * *handle identifies the watch for unwatch. */
  int (*watch)(void *st, const char *prefix, dyn_watch_fn fn, void *ud,
               void **handle);
  void (*unwatch)(void *st, void *handle);
  uint64_t (*session_id)(void *st);
  void (*close)(void *st);
  /* 1 while the session is live and every put so far was acknowledged:
   * what a worker's /health needs to say "registered". */
  int (*registered)(void *st);
} dyn__discovery_ops_t;

typedef struct dyn__events_ops {
  const char *name;
  int (*publish)(void *st, const char *subject, const void *data, size_t len);
  int (*subscribe)(void *st, const char *pattern, dyn_event_fn fn, void *ud,
                   void **handle);
  void (*unsubscribe)(void *st, void *handle);
  void (*close)(void *st);
} dyn__events_ops_t;

typedef struct dyn_runtime dyn_runtime_t;

/* The embedded backend: one session with the control plane at path. Blocks
 * (driving the runtime's loop) until the control plane accepted it. */
int dyn__embedded_open(dyn_runtime_t *rt, const char *path, void **state);
extern const dyn__discovery_ops_t dyn__embedded_discovery;
extern const dyn__events_ops_t dyn__embedded_events;

/* etcd v3 discovery (runtime/etcd/etcd.h) and NATS events
 * (runtime/nats/nats_events.h): same contracts, other machines. */
int dyn__etcd_open(dyn_runtime_t *rt, const char *endpoints, void **state);
extern const dyn__discovery_ops_t dyn__etcd_discovery;
int dyn__nats_open(dyn_runtime_t *rt, const char *url, void **state);
extern const dyn__events_ops_t dyn__nats_events;
#endif
