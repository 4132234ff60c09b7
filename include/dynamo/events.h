/* dynamo/events.h - publish/subscribe, for KV events and metrics.
 *
 * Subjects are dot-separated tokens, as in NATS; a subscription may use '*'
 * for one token and a final '>' for the rest. Components publish on
 * "namespace.{ns}.component.{c}.{name}". Delivery is at most once and
 * asynchronous: a publish never blocks the caller on subscribers.
 */
#ifndef DYNAMO_EVENTS_H
#define DYNAMO_EVENTS_H

#include "dynamo/export.h"

#include "dynamo/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_subscription dyn_subscription_t;
/* data is valid only during the call. */
typedef void (*dyn_event_fn)(const char *subject, const void *data,
                             size_t len, void *ud);

DYN_EXTERN int dyn_publish(dyn_runtime_t *rt, const char *subject, const void *data,
                size_t len);
DYN_EXTERN int dyn_subscribe(dyn_runtime_t *rt, const char *subject, dyn_event_fn fn,
                  void *ud, dyn_subscription_t **out);
DYN_EXTERN void dyn_unsubscribe(dyn_subscription_t *sub);

/* Writes "namespace.{ns}.component.{component}.{name}" into buf, the
 * subject a component's events go out on; DYN_EINVAL if it does not fit.
 * Names are not checked (a subscription's name may be a wildcard). */
DYN_EXTERN int dyn_event_subject(const char *ns, const char *component, const char *name,
                                 char *buf, size_t cap);
/* The same for a component, checked with dyn_subject_valid. */
DYN_EXTERN int dyn_component_subject(const dyn_component_t *c, const char *name,
                          char *buf, size_t cap);
DYN_EXTERN int dyn_component_publish(dyn_component_t *c, const char *name,
                          const void *data, size_t len);
DYN_EXTERN int dyn_component_subscribe(dyn_component_t *c, const char *name,
                            dyn_event_fn fn, void *ud,
                            dyn_subscription_t **out);

/* `dynamo status` asks how every process is doing by publishing an empty
 * event on DYN_STATUS_POLL_SUBJECT (about once a second while it runs).
 * Each runtime that serves an endpoint, or runs a service that `dynamo
 * serve` started, answers on DYN_STATUS_REPORT_SUBJECT by itself with
 *   {"instance_id": "<decimal>", "pid", "address": "host:port" ("" when it
 *    serves no endpoint), "inflight" (dyn_runtime_inflight), "draining",
 *    "endpoints": ["ns/component/endpoint", ...],
 *    "service": "ns/Name" (only when started by `dynamo serve`)}
 * Nobody asking costs nothing but one subscription per process. */
#define DYN_STATUS_POLL_SUBJECT "dynamo.status.poll"
#define DYN_STATUS_REPORT_SUBJECT "dynamo.status.report"

/* Subject syntax check, and whether a pattern matches a subject. */
DYN_EXTERN int dyn_subject_valid(const char *subject, int allow_wildcards);
DYN_EXTERN int dyn_subject_match(const char *pattern, const char *subject);

#ifdef __cplusplus
}
#endif
#endif
