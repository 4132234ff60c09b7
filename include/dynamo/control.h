/* dynamo/control.h - the embedded control plane.
 *
 * One process on a machine (`dynamo control`, later `dynamo serve`) hosts
 * the discovery registry and the event bus for every other process of the
 * graph, over a Unix socket that speaks the request-plane framing. It needs
 * no setup and no other system; graphs that span machines use etcd and NATS.
 */
#ifndef DYNAMO_CONTROL_H
#define DYNAMO_CONTROL_H

#include "dynamo/export.h"

#include <stddef.h>
#include <uv.h>

#include "dynamo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_control dyn_control_t;

/* $DYN_CONTROL_SOCKET, else "$XDG_RUNTIME_DIR/dynamo/control.sock", else
 * "/tmp/dynamo-{uid}/control.sock". The directory is created if missing. */
DYN_EXTERN const char *dyn_control_default_path(void);

/* Listens on path (NULL: the default) on loop. A stale socket file left by a
 * dead control plane is replaced; a live one is DYN_EEXIST. */
DYN_EXTERN int dyn_control_start(uv_loop_t *loop, const char *path, dyn_control_t **out);
/* Closes every session and the socket, removes the file; the handles finish
 * closing on the next loop pass. */
DYN_EXTERN void dyn_control_stop(dyn_control_t *cp);
DYN_EXTERN const char *dyn_control_path(const dyn_control_t *cp);
DYN_EXTERN size_t dyn_control_sessions(const dyn_control_t *cp);
DYN_EXTERN size_t dyn_control_keys(const dyn_control_t *cp);

#ifdef __cplusplus
}
#endif
#endif
