/* endpoint_metrics.c - the request plane's Prometheus metrics, per served
 * endpoint.
 *
 * Every worker serves the process's registry on its health port's
 * /metrics (C workers in service/health.c, Python ones through the
 * extension), so each endpoint a process serves gets, labelled namespace,
 * component, endpoint and instance (the process's instance id in hex):
 * requests received, those that ended in an error, those in flight, and
 * the payload bytes received and sent. server.c updates them with a plain
 * add on the loop; nothing here is on a request's path.
 */
#include <inttypes.h>
#include <stdio.h>

#include "runtime/internal.h"

static const char *const k_labels[] = {"namespace", "component", "endpoint", "instance", NULL};

static dyn_series_t *series(dyn_metrics_t *reg, dyn_metric_type_t type, const char *name,
                            const char *help, const char *const *values) {
  dyn_metric_t *f;
  if (dyn_metrics_add(reg, type, name, help, k_labels, NULL, 0, &f)) return NULL;
  return dyn_metric_series(f, values);
}

void dyn__endpoint_metrics_init(dyn_endpoint_t *ep) {
  if (ep->m_requests) return;
  dyn_metrics_t *reg = dyn_metrics_default();
  if (!reg) return;
  dyn_component_t *c = ep->component;
  char instance[17];
  snprintf(instance, sizeof instance, "%016" PRIx64, c->ns->rt->session);
  const char *v[] = {c->ns->name, c->name, ep->name, instance};
  ep->m_requests = series(reg, DYN_METRIC_COUNTER, "dynamo_endpoint_requests_total",
                          "Requests this instance received on the endpoint.", v);
  ep->m_errors = series(reg, DYN_METRIC_COUNTER, "dynamo_endpoint_errors_total",
                        "Requests that ended in an error.", v);
  ep->m_inflight = series(reg, DYN_METRIC_GAUGE, "dynamo_endpoint_inflight_requests",
                          "Requests being served.", v);
  ep->m_bytes_in = series(reg, DYN_METRIC_COUNTER, "dynamo_endpoint_received_bytes_total",
                          "Request payload bytes received.", v);
  ep->m_bytes_out = series(reg, DYN_METRIC_COUNTER, "dynamo_endpoint_sent_bytes_total",
                           "Response payload bytes sent.", v);
  if (!ep->m_requests || !ep->m_errors || !ep->m_inflight || !ep->m_bytes_in || !ep->m_bytes_out) {
    ep->m_requests = ep->m_errors = ep->m_inflight = ep->m_bytes_in = ep->m_bytes_out = NULL;
    dyn_log(DYN_LOG_WARN, "no request metrics for %s (out of memory, or a metric of that "
            "name registered differently)", ep->path);
  }
}
