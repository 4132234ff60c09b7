/* cp_proto.h - the embedded control plane's messages.
 *
 * They ride on request-plane frames (frame.h) with types 16..31, so one
 * decoder, one fuzz target and one connection type serve both planes. The
 * stream id of a frame names the operation it belongs to (a watch, a
 * subscription, a put awaiting its answer).
 *
 *   PUT     [u16 klen][key][value]        -> OK or ERROR
 *   DEL     [key]                          -> OK or ERROR
 *   WATCH   [prefix]                       -> EVENT* (snapshot), EVENT(SYNCED), EVENT*
 *   EVENT   [u8 kind][u16 klen][key][value]
 *   UNWATCH (empty, stream = watch)
 *   PUB     [u16 slen][subject][data]
 *   SUB     [pattern]                      -> MSG*
 *   MSG     [u16 slen][subject][data]
 *   UNSUB   (empty, stream = subscription)
 */
#ifndef DYN__CP_PROTO_H
#define DYN__CP_PROTO_H
#include <stddef.h>
#include <stdint.h>

#include "runtime/frame.h"

enum {
  DYN__CP_PUT = 16,
  DYN__CP_DEL = 17,
  DYN__CP_WATCH = 18,
  DYN__CP_EVENT = 19,
  DYN__CP_OK = 20,
  DYN__CP_UNWATCH = 21,
  DYN__CP_PUB = 22,
  DYN__CP_SUB = 23,
  DYN__CP_MSG = 24,
  DYN__CP_UNSUB = 25
};

#define DYN__CP_KEY_MAX 1024u

/* A string, then the rest of the payload: PUT, EVENT (after its kind byte),
 * PUB and MSG all share this shape. */
typedef struct dyn__cp_pair {
  const char *str; /* not NUL-terminated */
  uint16_t str_len;
  const uint8_t *rest;
  size_t rest_len;
} dyn__cp_pair_t;

/* Returns 0 or DYN_EPROTO; *why names the problem. Rejects an empty or
 * oversize string and one containing NUL. */
int dyn__cp_pair_decode(const uint8_t *p, size_t n, dyn__cp_pair_t *out,
                        const char **why);
/* Encodes the [u16 len][str] prefix into out (2 + len bytes). */
size_t dyn__cp_pair_prefix(uint8_t *out, const char *str, uint16_t len);
/* Checks a payload that is a single string (DEL, WATCH, SUB). */
int dyn__cp_string_check(const uint8_t *p, size_t n, const char **why);
#endif
