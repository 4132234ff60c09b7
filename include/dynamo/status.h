/* dynamo/status.h - status codes returned by every dynamo call.
 *
 * Every public function that can fail returns an int: DYN_OK (0) on success
 * or one of the negative DYN_E* codes below. Codes never hide: a function
 * that fails says so, and dyn_strerror() turns the code into a sentence.
 * Where a failure carries more detail (a peer's error message, the path of
 * a config file), the detail travels next to the code, never instead of it.
 */
#ifndef DYNAMO_STATUS_H
#define DYNAMO_STATUS_H

#include "dynamo/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dyn_status {
  DYN_OK = 0,
  DYN_EOF = -1,          /* a stream ended normally (blocking API) */
  DYN_EINVAL = -2,       /* an argument was invalid */
  DYN_ENOMEM = -3,       /* out of memory */
  DYN_ENOINSTANCE = -4,  /* no live instance serves the endpoint */
  DYN_ECONNECT = -5,     /* could not connect to any instance */
  DYN_EDISCONNECTED = -6,/* the instance went away mid-stream */
  DYN_EREMOTE = -7,      /* the handler failed; the message says why */
  DYN_ECANCELED = -8,    /* the stream was cancelled */
  DYN_ETIMEDOUT = -9,    /* a deadline passed */
  DYN_EPROTO = -10,      /* a peer broke the wire protocol */
  DYN_ECLOSED = -11,     /* the object is closed or shutting down */
  DYN_ECONTROL = -12,    /* the control plane is unreachable or refused */
  DYN_EEXIST = -13,      /* the name is already taken */
  DYN_ENOTFOUND = -14,   /* no such endpoint, key or object */
  DYN_ETOOBIG = -15,     /* a message exceeds the maximum frame size */
  DYN_ESYS = -16         /* an operating system call failed */
} dyn_status_t;

/* A short sentence naming the failure; never NULL. */
DYN_EXTERN const char *dyn_strerror(int status);

#ifdef __cplusplus
}
#endif
#endif
