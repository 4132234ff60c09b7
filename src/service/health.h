/* health.h - a C worker's health endpoints (GET /live, GET /health).
 *
 * The same contract as the Python worker's (python/dynamo/sdk/health.py):
 * with DYN_HEALTH_PORT set, /live answers 200 while the worker's loop runs,
 * and /health answers 200 {"status":"ready"} once its endpoints are
 * registered and on_start returned, 503 before ("starting"), while it
 * drains ("draining") and, once ready, whenever discovery no longer holds
 * its registration ("unregistered": the control plane or etcd lease was
 * lost; 200 again once put back). One per process, hence no handle: the
 * worker's signal handler has no context to carry one in.
 */
#ifndef DYN__SERVICE_HEALTH_H
#define DYN__SERVICE_HEALTH_H

#include "dynamo/runtime.h"

/* Starts serving on $DYN_HEALTH_PORT ($DYN_HEALTH_HOST, default 0.0.0.0)
 * when it is set and not empty or 0; DYN_OK and nothing started when it
 * is not. DYN_EINVAL for a value that is not a port, or the server's error
 * when it cannot listen (both also printed). */
int dyn__health_start(dyn_runtime_t *rt, const char *who);
/* "starting" (the initial state), "ready" or "draining". */
void dyn__health_set(const char *state);
/* Stops the server; its memory goes with the loop's next run. */
void dyn__health_stop(void);

#endif
