/* utf8.h - UTF-8 validation and repair: the one copy.
 *
 * Well-formed means RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF. Bytes that can never become valid UTF-8 are replaced with
 * U+FFFD, one per maximal invalid subsequence: the rule Rust's
 * String::from_utf8_lossy (and so HF tokenizers' decode) follows, and
 * WHATWG's decoder too. The rule only ever looks at the bytes of one
 * character, so applying it to a stream piece by piece gives the same text
 * as applying it to the whole. Used by the tokenizer (src/llm/tokenizer)
 * and the JSON string escaper (json_escape.h).
 */
#ifndef DYN__UTF8_H
#define DYN__UTF8_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* For a lead byte: the sequence length (0: never valid as a lead) and the
 * range allowed for the second byte (which excludes overlongs, surrogates
 * and code points above U+10FFFF). */
static inline size_t dyn__utf8_lead(uint8_t b, uint8_t *lo, uint8_t *hi) {
  *lo = 0x80, *hi = 0xBF;
  if (b < 0x80) return 1;
  if (b < 0xC2) return 0;
  if (b < 0xE0) return 2;
  if (b < 0xF0) {
    if (b == 0xE0) *lo = 0xA0;
    if (b == 0xED) *hi = 0x9F;
    return 3;
  }
  if (b < 0xF5) {
    if (b == 0xF0) *lo = 0x90;
    if (b == 0xF4) *hi = 0x8F;
    return 4;
  }
  return 0;
}

/* For the character at s (n >= 1 bytes): *need its length (0: s[0] is no
 * lead byte), *ok how many of its leading bytes are valid. It is valid
 * when need && ok == need; otherwise its first (ok ? ok : 1) bytes are a
 * maximal invalid subsequence, to replace with one U+FFFD. */
static inline void dyn__utf8_scan(const uint8_t *s, size_t n, size_t *need, size_t *ok) {
  uint8_t lo, hi;
  *need = dyn__utf8_lead(s[0], &lo, &hi);
  if (*need == 0) {
    *ok = 0;
    return;
  }
  size_t k = 1;
  while (k < *need && k < n) {
    uint8_t c = s[k];
    if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
    k++;
  }
  *ok = k;
}

/* Length of the valid UTF-8 prefix of s. */
size_t dyn__utf8_valid_prefix(const uint8_t *s, size_t n);
/* Decodes one code point at s; returns its byte length, 0 if invalid. */
size_t dyn__utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
/* Appends s to out, replacing each maximal invalid subsequence by U+FFFD.
 * With `final` false, an incomplete but so-far-valid sequence at the end is
 * not consumed; returns the number of bytes of s consumed. out must have
 * room for 3 * n bytes (U+FFFD is 3 bytes per invalid byte at worst). */
size_t dyn__utf8_lossy(const uint8_t *s, size_t n, bool final, char *out, size_t *out_len);
#endif
