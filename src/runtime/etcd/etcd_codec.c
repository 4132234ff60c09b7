/* etcd_codec.c - base64, prefix ranges and int64-as-string fields for
 * etcd's JSON gateway (see etcd_codec.h for why ids avoid doubles). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/etcd/etcd_codec.h"

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t dyn__etcd_b64_size(size_t n) { return (n + 2) / 3 * 4 + 1; }

void dyn__etcd_b64_encode(const void *in, size_t n, char *out) {
  const unsigned char *p = in;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *out++ = b64[v >> 18];
    *out++ = b64[(v >> 12) & 63];
    *out++ = b64[(v >> 6) & 63];
    *out++ = b64[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)p[i] << 16;
    *out++ = b64[v >> 18];
    *out++ = b64[(v >> 12) & 63];
    *out++ = '=';
    *out++ = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    *out++ = b64[v >> 18];
    *out++ = b64[(v >> 12) & 63];
    *out++ = b64[(v >> 6) & 63];
    *out++ = '=';
  }
  *out = 0;
}

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int dyn__etcd_b64_decode(const char *in, size_t len, char *out, size_t *out_len) {
  while (len && in[len - 1] == '=') len--; /* padding is optional */
  if (len % 4 == 1) return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_value((unsigned char)in[i]);
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[o] = 0;
  *out_len = o;
  return 0;
}

char *dyn__etcd_b64_member(json_t *obj, const char *name, size_t *len) {
  json_t *m = json_object_get(obj, name);
  const char *s = m ? json_string_value(m) : "";
  if (!s) return NULL;
  size_t n = m ? json_string_length(m) : 0;
  char *out = malloc(n / 4 * 3 + 4);
  size_t got = 0;
  if (!out || dyn__etcd_b64_decode(s, n, out, &got)) {
    free(out);
    return NULL;
  }
  if (len) *len = got;
  return out;
}

void dyn__etcd_prefix_end(const char *prefix, size_t n, char *out, size_t *out_n) {
  memcpy(out, prefix, n);
  while (n && (unsigned char)out[n - 1] == 0xff) n--;
  if (n) out[n - 1] = (char)((unsigned char)out[n - 1] + 1);
  *out_n = n;
}

int dyn__etcd_json_u64(json_t *obj, const char *name, uint64_t *out) {
  json_t *m = json_object_get(obj, name);
  *out = 0;
  if (!m) return 1;
  if (json_is_integer(m)) {
    json_int_t v = json_integer_value(m);
    if (v < 0) return -1;
    *out = (uint64_t)v;
    return 0;
  }
  const char *s = json_string_value(m);
  if (!s || *s < '0' || *s > '9') return -1; /* strtoull would take "-1" */
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > INT64_MAX) return -1;
  *out = (uint64_t)v;
  return 0;
}
