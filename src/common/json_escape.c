/* json_escape.c - a JSON string literal from (ptr, len) (see json_escape.h).
 *
 * One pass, writing straight into reserved room: the worst case is 6 bytes
 * out per byte in ("\u001f", or "\ufffd" for a stray byte), so the room
 * is reserved once and no byte is appended on its own.
 */
#include "common/json_escape.h"

#include <stdint.h>
#include <string.h>

#include "dynamo/status.h"
#include "common/utf8.h"

int dyn__json_escape(dyn__buf_t *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  if (n > (SIZE_MAX - 2) / 6 || dyn__buf_reserve(b, n * 6 + 2)) return DYN_ENOMEM;
  const unsigned char *p = (const unsigned char *)s;
  char *o = (char *)b->data + b->len, *start = o;
  *o++ = '"';
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      *o++ = (char)c;
      i++;
      continue;
    }
    if (c < 0x80) {
      *o++ = '\\';
      switch (c) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '\n': *o++ = 'n'; break;
      case '\r': *o++ = 'r'; break;
      case '\t': *o++ = 't'; break;
      default: *o++ = 'u', *o++ = '0', *o++ = '0', *o++ = hex[c >> 4], *o++ = hex[c & 15];
      }
      i++;
      continue;
    }
    size_t need, ok;
    dyn__utf8_scan(p + i, n - i, &need, &ok);
    if (need && ok == need) {
      memcpy(o, p + i, need);
      o += need;
      i += need;
    } else {
      memcpy(o, "\\ufffd", 6);
      o += 6;
      i += ok ? ok : 1;
    }
  }
  *o++ = '"';
  b->len += (size_t)(o - start);
  return DYN_OK;
}
