/* utf8.c - UTF-8 validation, decoding and repair (see utf8.h). */
#include "common/utf8.h"

#include <string.h>

size_t dyn__utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
  if (n == 0) return 0;
  size_t need, ok;
  dyn__utf8_scan(s, n, &need, &ok);
  if (need == 0 || ok < need) return 0;
  static const uint8_t mask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  uint32_t v = s[0] & mask[need];
  for (size_t i = 1; i < need; i++) v = v << 6 | (s[i] & 0x3F);
  *cp = v;
  return need;
}

size_t dyn__utf8_valid_prefix(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) { /* ASCII runs are the common case */
      i++;
      continue;
    }
    size_t need, ok;
    dyn__utf8_scan(s + i, n - i, &need, &ok);
    if (need == 0 || ok < need) break;
    i += need;
  }
  return i;
}

size_t dyn__utf8_lossy(const uint8_t *s, size_t n, bool final, char *out, size_t *out_len) {
  size_t i = 0, o = *out_len;
  while (i < n) {
    size_t need, ok;
    dyn__utf8_scan(s + i, n - i, &need, &ok);
    if (need && ok == need) {
      memcpy(out + o, s + i, need);
      o += need;
      i += need;
      continue;
    }
    if (need && i + ok == n && !final) break; /* incomplete: wait for more */
    memcpy(out + o, "\xEF\xBF\xBD", 3);
    o += 3;
    i += ok ? ok : 1;
  }
  *out_len = o;
  return i;
}
