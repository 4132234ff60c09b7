/* registered.h - whether this process's registrations are live, for the
 * workers' /health (sdk/health.c, python/dynamo/sdk/health.py).
 *
 * Its own header, not internal.h, so that the health servers and the
 * Python extension can ask without pulling in the runtime's internals.
 * "Serving" is not enough for readiness: with etcd, serving an endpoint
 * only queues its put, and once the lease is lost (etcd down past the TTL)
 * callers no longer find the worker, though it still runs.
 */
#ifndef DYN__RUNTIME_REGISTERED_H
#define DYN__RUNTIME_REGISTERED_H

#include "dynamo/runtime.h"

/* 1 while discovery holds this process's session (embedded: connected to
 * the control plane; etcd: lease granted and kept alive within its TTL)
 * and every key the process put was acknowledged; else 0. */
int dyn__runtime_registered(dyn_runtime_t *rt);

#endif
