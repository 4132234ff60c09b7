/* status.c - the sentence behind each status code. */
#include "dynamo/status.h"

const char *dyn_strerror(int status) {
  switch (status) {
    case DYN_OK: return "ok";
    case DYN_EOF: return "end of stream";
    case DYN_EINVAL: return "invalid argument";
    case DYN_ENOMEM: return "out of memory";
    case DYN_ENOINSTANCE: return "no live instance serves the endpoint";
    case DYN_ECONNECT: return "could not connect to any instance";
    case DYN_EDISCONNECTED: return "instance disconnected mid-stream";
    case DYN_EREMOTE: return "the endpoint handler failed";
    case DYN_ECANCELED: return "stream cancelled";
    case DYN_ETIMEDOUT: return "timed out";
    case DYN_EPROTO: return "protocol error";
    case DYN_ECLOSED: return "closed or shutting down";
    case DYN_ECONTROL: return "control plane unreachable";
    case DYN_EEXIST: return "already exists";
    case DYN_ENOTFOUND: return "not found";
    case DYN_ETOOBIG: return "message exceeds the maximum frame size";
    case DYN_ESYS: return "system call failed";
    default: return "unknown status";
  }
}
