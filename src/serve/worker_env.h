/* worker_env.h - the environment each worker of a served graph gets.
 *
 * A worker learns everything from its environment: the configuration, where
 * the control plane (or etcd and NATS) is, which service it is and which
 * worker of it, its GPUs, its health port, which of its dependencies are
 * live. The names are in common/env_names.h, each with its readers.
 */
#ifndef DYN__SERVE_WORKER_ENV_H
#define DYN__SERVE_WORKER_ENV_H

#include "serve/workers.h"

/* What every worker of one graph shares. */
typedef struct dyn__graph_env {
  const char *config_text;    /* the merged configuration, compact JSON */
  const char *control_socket; /* NULL or "": none (etcd and NATS instead) */
  const char *etcd, *nats;    /* NULL: not set by us */
  const char *host;           /* the address to advertise, or NULL */
  const char *config_file;    /* as given to -f (made absolute here), or NULL */
  const char *target;         /* the graph's TARGET */
  double grace_s;             /* the worker's drain on SIGTERM */
  int is_c;                   /* a C graph: no Python in the workers */
  const dyn__workers_t *all;  /* every worker this serve runs, for
                                 DYN_LOCAL_WORKERS; NULL: not set */
} dyn__graph_env_t;

/* This process's environment, then w's service's envs, then the variables
 * of g and w, which the service's envs cannot override (a worker with the
 * wrong control socket or someone else's GPUs is a bug, not a setting).
 * *out is a NULL-terminated "NAME=value" array for uv_spawn; free it with
 * dyn__strv_free. */
int dyn__worker_env(const dyn__graph_env_t *g, const dyn__worker_t *w, char ***out);

#endif
