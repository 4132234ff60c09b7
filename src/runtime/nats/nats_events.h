/* nats_events.h - the NATS events backend: dynamo's publish/subscribe on a
 * NATS server (Debian's nats-server), through libnats.
 *
 * Subjects are the embedded backend's, unchanged ("namespace.{ns}.component.
 * {c}.{name}", '*' and a final '>' in patterns): they are NATS's own syntax,
 * so the server does the matching. The connection's I/O runs on the
 * runtime's loop and subscribers' callbacks run on the loop's thread, like
 * everything else in a runtime. When NATS is unreachable the request plane
 * does not notice: publishes are dropped and counted, one warning is logged
 * per outage, and events flow again (subscriptions included) once NATS is
 * back. See nats_events.c for how and why.
 */
#ifndef DYN__NATS_EVENTS_H
#define DYN__NATS_EVENTS_H

#include <stdint.h>

#include "runtime/backend.h"

/* Connects to url ("nats://127.0.0.1:4222"; a comma-separated list of
 * servers works too) and blocks until connected or failed: the connect and
 * handshake are bounded by a 2 s timeout. Call on the thread that drives
 * rt's loop. On failure logs "cannot reach NATS at URL: why" and returns
 * DYN_ECONTROL (DYN_EINVAL for an empty url, DYN_ENOMEM, DYN_ESYS). */
int dyn__nats_open(dyn_runtime_t *rt, const char *url, void **state);
extern const dyn__events_ops_t dyn__nats_events;

/* Publishes dropped so far because NATS was away (or refused them). */
uint64_t dyn__nats_dropped(void *state);

/* The client's PING period and how many PINGs may go unanswered before a
 * connection whose peer stopped answering counts as lost (defaults 10 s and
 * 3). Read by dyn__nats_open; tests shorten them. */
extern int64_t dyn__nats_ping_interval_ms;
extern int dyn__nats_max_pings_out;
#endif
