/* status_report.c - what a process tells `dynamo status` when asked.
 *
 * `dynamo status` publishes an empty event on DYN_STATUS_POLL_SUBJECT
 * about once a second while it runs; every process that serves an
 * endpoint or runs a service of a served graph answers with one small
 * JSON object on DYN_STATUS_REPORT_SUBJECT (events.h has its fields).
 *
 * Pull rather than push: with nobody asking, no process sends anything,
 * and while someone asks it is one message per process per poll. The
 * numbers are the runtime's own counters read when the poll arrives, so
 * the request path does no extra work for them. Discovery's instance
 * values stay as they are: rewriting them every second would be a write to
 * etcd per process per second, and their watchers (every client) would
 * hear each one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/env_names.h"
#include "runtime/internal.h"

/* "ns/Name" of the service `dynamo serve` started this process for, or
 * just "Name" when the namespace is not known; NULL when it was not. */
static json_t *service_name(void) {
  const char *name = getenv(DYN_ENV_SERVICE_NAME);
  if (!name || !*name) return NULL;
  const char *ns = getenv(DYN_ENV_SERVICE_NAMESPACE);
  return ns && *ns ? json_sprintf("%s/%s", ns, name) : json_string(name);
}

static void on_poll(const char *subject, const void *data, size_t len, void *ud) {
  (void)subject, (void)data, (void)len;
  dyn_runtime_t *rt = ud;
  json_t *service = service_name();
  if (!service && !rt->served) return; /* a client only: not part of the graph */
  json_t *endpoints = json_array();
  for (dyn_endpoint_t *ep = rt->served; ep && endpoints; ep = ep->served_next)
    json_array_append_new(endpoints, json_string(ep->path));
  char id[24];
  snprintf(id, sizeof id, "%" PRIu64, rt->session);
  json_t *v = json_pack("{s:s, s:I, s:s, s:I, s:b, s:o}", "instance_id", id, "pid",
                        (json_int_t)getpid(), "address", rt->listening ? rt->address : "",
                        "inflight", (json_int_t)rt->inflight, "draining", rt->draining,
                        "endpoints", endpoints);
  if (v && service) json_object_set(v, "service", service);
  json_decref(service);
  char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
  json_decref(v);
  /* Best effort, like every event: a poll that goes unanswered shows as a
   * process without numbers, which the next poll repairs. */
  if (s) dyn_publish(rt, DYN_STATUS_REPORT_SUBJECT, s, strlen(s));
  free(s);
}

int dyn__status_report_start(dyn_runtime_t *rt) {
  /* Kept until the runtime closes its events backend: no handle needed. */
  return dyn_subscribe(rt, DYN_STATUS_POLL_SUBJECT, on_poll, rt, NULL);
}
