/* etcd_codec.h - the small encodings etcd's JSON gateway needs.
 *
 * The gateway carries keys and values as base64 and every int64 (lease
 * ids, revisions, TTLs) as a decimal string. Ids use all 64 bits, so they
 * are read from the string with strtoull and never pass through a double,
 * which keeps only 53 bits and would silently name another lease.
 */
#ifndef DYN__ETCD_CODEC_H
#define DYN__ETCD_CODEC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes dyn__etcd_b64_encode writes for n input bytes, NUL included. */
size_t dyn__etcd_b64_size(size_t n);
void dyn__etcd_b64_encode(const void *in, size_t n, char *out);

/* Decodes len base64 characters into out (room for len / 4 * 3 + 1 bytes)
 * and NUL-terminates it. 0 and *out_len, or -1 for malformed input. */
int dyn__etcd_b64_decode(const char *in, size_t len, char *out, size_t *out_len);

/* A freshly allocated, NUL-terminated decoding of a base64 JSON string
 * member (NULL member: an empty string), or NULL if malformed or out of
 * memory. *len gets the decoded length when len is not NULL. */
char *dyn__etcd_b64_member(json_t *obj, const char *name, size_t *len);

/* The end of the range holding every key that starts with prefix: the
 * prefix with its last byte below 0xff incremented and what follows
 * dropped. out has room for n bytes; *out_n is 0 when no byte can be
 * incremented, which etcd reads as "to the end of the keyspace" ("\0"). */
void dyn__etcd_prefix_end(const char *prefix, size_t n, char *out, size_t *out_n);

/* Reads an int64 member sent as a decimal string (or, from other
 * gateways, as an integer): 0 with *out set, 1 if absent (*out = 0),
 * -1 if malformed or negative. */
int dyn__etcd_json_u64(json_t *obj, const char *name, uint64_t *out);
#endif
