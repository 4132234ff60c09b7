/* cp_proto.c - encoding and checking of control-plane payloads. */
#include "runtime/embedded/cp_proto.h"

#include <string.h>

#include "dynamo/status.h"

int dyn__cp_pair_decode(const uint8_t *p, size_t n, dyn__cp_pair_t *out,
                        const char **why) {
  if (n < 2) {
    *why = "control message shorter than its string length";
    return DYN_EPROTO;
  }
  uint16_t len = dyn__get_u16(p);
  if (len == 0 || len > DYN__CP_KEY_MAX || (size_t)len > n - 2) {
    *why = "control message string length out of range";
    return DYN_EPROTO;
  }
  if (memchr(p + 2, 0, len)) {
    *why = "control message string contains NUL";
    return DYN_EPROTO;
  }
  out->str = (const char *)p + 2;
  out->str_len = len;
  out->rest = p + 2 + len;
  out->rest_len = n - 2 - len;
  return DYN_OK;
}

size_t dyn__cp_pair_prefix(uint8_t *out, const char *str, uint16_t len) {
  dyn__put_u16(out, len);
  memcpy(out + 2, str, len);
  return 2u + len;
}

int dyn__cp_string_check(const uint8_t *p, size_t n, const char **why) {
  if (n == 0 || n > DYN__CP_KEY_MAX) {
    *why = "control message string empty or too long";
    return DYN_EPROTO;
  }
  if (memchr(p, 0, n)) {
    *why = "control message string contains NUL";
    return DYN_EPROTO;
  }
  return DYN_OK;
}
