/* dynamo/discovery.h - the key/value registry that names live instances.
 *
 * Keys put by a process live exactly as long as its session: when the
 * process dies (its control connection or lease ends) its keys go, and
 * watchers hear of it. A watch delivers a snapshot of every key under a
 * prefix, then DYN_WATCH_SYNCED, then each change; after DYN_WATCH_RESET
 * (the backend lost and regained its view) a fresh snapshot follows.
 *
 * Instance keys: "instances/{ns}/{component}/{endpoint}:{id in hex}", with
 * a JSON value {"address":"host:port","instance_id":"<decimal string>"}.
 *
 * The backend (the embedded control plane, or etcd) hides behind
 * dyn__discovery_ops_t in src/runtime/backend.h: callers use only this
 * header and never know which one is in use.
 */
#ifndef DYNAMO_DISCOVERY_H
#define DYNAMO_DISCOVERY_H

#include "dynamo/export.h"

#include "dynamo/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_watch dyn_watch_t;

typedef enum dyn_watch_event {
  DYN_WATCH_PUT = 1,
  DYN_WATCH_DELETE = 2,
  DYN_WATCH_SYNCED = 3,
  DYN_WATCH_RESET = 4
} dyn_watch_event_t;

/* key and value are valid only during the call; value is NUL-terminated. */
typedef void (*dyn_watch_fn)(dyn_watch_event_t ev, const char *key,
                             const char *value, size_t len, void *ud);

/* Puts key=value under this process's session. */
DYN_EXTERN int dyn_discovery_put(dyn_runtime_t *rt, const char *key, const char *value);
DYN_EXTERN int dyn_discovery_delete(dyn_runtime_t *rt, const char *key);
DYN_EXTERN int dyn_discovery_watch(dyn_runtime_t *rt, const char *prefix,
                        dyn_watch_fn fn, void *ud, dyn_watch_t **out);
DYN_EXTERN void dyn_discovery_unwatch(dyn_watch_t *w);

/* Writes the instance key prefix of ep ("instances/ns/c/ep:") into buf. */
DYN_EXTERN int dyn_instance_prefix(const char *ns, const char *component,
                        const char *endpoint, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
