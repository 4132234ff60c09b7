/* etcd.h - the etcd v3 discovery backend, over etcd's JSON gateway.
 *
 * One lease per process is its session: granted at open, kept alive every
 * TTL/3, attached to every key the process puts, and revoked at close so
 * that its instances vanish at once; if the process dies, etcd drops the
 * keys when the TTL runs out. The lease id is the session id, so instance
 * keys read "instances/{ns}/{component}/{endpoint}:{lease id in hex}" with
 * the JSON value {"address":"host:port","instance_id":"<decimal>",...}.
 *
 * Watches are a range (the snapshot, then DYN_WATCH_SYNCED) and a watch
 * stream from the next revision. After the stream or etcd is lost, the
 * backend backs off (250 ms doubling to 2 s), ranges again and delivers
 * DYN_WATCH_RESET, the fresh snapshot and SYNCED together, so a watcher
 * keeps its last view while etcd is away.
 *
 * If etcd forgets the lease (it expired while we could not reach etcd, or
 * someone revoked it) the backend grants the same id again and puts every
 * key back, so the session id normally survives. Only if etcd refuses that
 * id does the session id change; the session hook then tells the runtime
 * (see dyn__etcd_set_session_hook).
 */
#ifndef DYN__ETCD_H
#define DYN__ETCD_H

#include <stdint.h>

#include "runtime/backend.h"

typedef struct dyn__etcd_options {
  int ttl_s;         /* lease TTL; 0: $DYN_ETCD_TTL, else 10 (etcd's minimum is 2) */
  uint64_t lease_id; /* ask etcd for this lease id; 0: etcd picks */
  int fresh_id;      /* on lease loss grant a new id rather than the old one (tests) */
} dyn__etcd_options_t;

/* Opens a session with the etcd cluster at endpoints, a comma-separated
 * list of base URLs ("http://127.0.0.1:2379,http://10.0.0.2:2379"); the
 * backend moves to the next one when one fails. Blocks, driving rt's loop,
 * until etcd granted the lease (5 s at most); DYN_ECONTROL, logged as
 * "cannot reach etcd at ...: why", if it did not. */
int dyn__etcd_open(dyn_runtime_t *rt, const char *endpoints, void **state);
int dyn__etcd_open_opts(dyn_runtime_t *rt, const char *endpoints,
                        const dyn__etcd_options_t *opts, void **state);

/* Called when the session id changed (etcd refused to grant the old lease
 * id again), before the backend puts the remembered keys back under the
 * new lease: keys that embed the old id can be deleted and put again under
 * the new one from inside fn, and the replay then carries the new set. */
typedef void (*dyn__etcd_session_fn)(void *ud, uint64_t old_id, uint64_t new_id);
void dyn__etcd_set_session_hook(void *state, dyn__etcd_session_fn fn, void *ud);

extern const dyn__discovery_ops_t dyn__etcd_discovery;
#endif
