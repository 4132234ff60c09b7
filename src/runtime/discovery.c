/* discovery.c - the front of the discovery interface (dynamo/discovery.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

struct dyn_watch {
  dyn_runtime_t *rt;
  void *handle;
};

int dyn_discovery_put(dyn_runtime_t *rt, const char *key, const char *value) {
  if (!key || !*key || !value) return DYN_EINVAL;
  if (!rt->disc) return DYN_ECLOSED;
  return rt->disc->put(rt->disc_state, key, value);
}

int dyn_discovery_delete(dyn_runtime_t *rt, const char *key) {
  if (!key || !*key) return DYN_EINVAL;
  if (!rt->disc) return DYN_ECLOSED;
  return rt->disc->del(rt->disc_state, key);
}

int dyn_discovery_watch(dyn_runtime_t *rt, const char *prefix, dyn_watch_fn fn,
                        void *ud, dyn_watch_t **out) {
  if (!prefix || !*prefix || !fn) return DYN_EINVAL;
  if (!rt->disc) return DYN_ECLOSED;
  dyn_watch_t *w = calloc(1, sizeof *w);
  if (!w) return DYN_ENOMEM;
  w->rt = rt;
  int rc = rt->disc->watch(rt->disc_state, prefix, fn, ud, &w->handle);
  if (rc) {
    free(w);
    return rc;
  }
  *out = w;
  return DYN_OK;
}

void dyn_discovery_unwatch(dyn_watch_t *w) {
  if (!w) return;
  if (w->rt->disc) w->rt->disc->unwatch(w->rt->disc_state, w->handle);
  free(w);
}

int dyn_instance_prefix(const char *ns, const char *component, const char *endpoint,
                        char *buf, size_t cap) {
  int n = snprintf(buf, cap, "instances/%s/%s/%s:", ns, component, endpoint);
  return n < 0 || (size_t)n >= cap ? DYN_EINVAL : DYN_OK;
}
