/* events.c - the front of the events interface (dynamo/events.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/internal.h"

struct dyn_subscription {
  dyn_runtime_t *rt;
  void *handle;
};

int dyn_publish(dyn_runtime_t *rt, const char *subject, const void *data, size_t len) {
  if (!dyn_subject_valid(subject, 0)) return DYN_EINVAL;
  if (!rt->ev) return DYN_ECLOSED;
  if (len > rt->max_frame - 1100) return DYN_ETOOBIG;
  return rt->ev->publish(rt->ev_state, subject, data, len);
}

int dyn_subscribe(dyn_runtime_t *rt, const char *subject, dyn_event_fn fn,
                  void *ud, dyn_subscription_t **out) {
  if (!dyn_subject_valid(subject, 1) || !fn) return DYN_EINVAL;
  if (!rt->ev) return DYN_ECLOSED;
  dyn_subscription_t *s = calloc(1, sizeof *s);
  if (!s) return DYN_ENOMEM;
  s->rt = rt;
  int rc = rt->ev->subscribe(rt->ev_state, subject, fn, ud, &s->handle);
  if (rc) {
    free(s);
    return rc;
  }
  /* Without out the caller can never unsubscribe: the backend keeps the
   * subscription until the runtime closes, and the front is not needed. */
  if (out) *out = s;
  else free(s);
  return DYN_OK;
}

void dyn_unsubscribe(dyn_subscription_t *s) {
  if (!s) return;
  if (s->rt->ev) s->rt->ev->unsubscribe(s->rt->ev_state, s->handle);
  free(s);
}

/* The one place a component's subject is spelled (events.h); the Python
 * SDK calls it too, through the extension. */
int dyn_event_subject(const char *ns, const char *component, const char *name, char *buf,
                      size_t cap) {
  int n = snprintf(buf, cap, "namespace.%s.component.%s.%s", ns, component, name);
  return n < 0 || (size_t)n >= cap ? DYN_EINVAL : DYN_OK;
}

/* name may be a wildcard here, since subscriptions allow them. */
static int component_subject(const dyn_component_t *c, const char *name, char *buf,
                             size_t cap) {
  return dyn_event_subject(c->ns->name, c->name, name, buf, cap);
}

int dyn_component_subject(const dyn_component_t *c, const char *name, char *buf,
                          size_t cap) {
  int rc = component_subject(c, name, buf, cap);
  if (rc) return rc;
  return dyn_subject_valid(buf, 0) ? DYN_OK : DYN_EINVAL;
}

int dyn_component_publish(dyn_component_t *c, const char *name, const void *data,
                          size_t len) {
  char subject[512];
  int rc = dyn_component_subject(c, name, subject, sizeof subject);
  return rc ? rc : dyn_publish(c->ns->rt, subject, data, len);
}

int dyn_component_subscribe(dyn_component_t *c, const char *name, dyn_event_fn fn,
                            void *ud, dyn_subscription_t **out) {
  char subject[512];
  int rc = component_subject(c, name, subject, sizeof subject);
  return rc ? rc : dyn_subscribe(c->ns->rt, subject, fn, ud, out);
}
