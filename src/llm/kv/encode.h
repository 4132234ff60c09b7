/* encode.h - the worker's side of the KV event wire format (kv/events.c).
 *
 * Decoding is public (dynamo/llm/kv.h: anyone may read the bus); encoding
 * appends to the project's internal buffer, so it stays inside. */
#ifndef DYN__LLM_KV_ENCODE_H
#define DYN__LLM_KV_ENCODE_H
#include "common/buf.h"
#include "dynamo/llm/kv.h"

/* Appends one batch (worker_id, events) to out. Fields a kind does not use
 * are ignored (has_parent/blocks outside STORED, removed outside REMOVED).
 * DYN_EINVAL: out NULL, events NULL with n_events > 0, an unknown kind, a
 * NULL array with a non-zero count, or more than UINT32_MAX events/blocks;
 * DYN_ENOMEM. On error out->len is unchanged. */
int dyn__kv_encode(dyn__buf_t *out, uint64_t worker_id, const dyn_kv_event_t *events,
                    size_t n_events);
#endif
