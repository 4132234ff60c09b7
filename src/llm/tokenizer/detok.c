/* detok.c - UTF-8 repair and the incremental detokenizer.
 *
 * A byte-level BPE token is a run of bytes, not of characters: "é" or an
 * emoji can be split over two or four tokens. A streaming response must
 * not send half a character (a client decoding each SSE event would show
 * garbage), so the detokenizer holds the bytes of an incomplete character
 * until the token that completes it arrives.
 *
 * Bytes that can never become valid UTF-8 are replaced with U+FFFD, one
 * per maximal invalid subsequence: the rule Rust's String::from_utf8_lossy
 * (and so HF tokenizers' decode) follows, and WHATWG's decoder too. The
 * rule only ever looks at the bytes of one character, so applying it to a
 * stream piece by piece gives the same text as applying it to the whole.
 */
#include <stdlib.h>
#include <string.h>

#include "llm/tokenizer/tok_internal.h"
#include "dynamo/status.h"

/* For a lead byte: the sequence length (0: never valid as a lead) and the
 * range allowed for the second byte (which excludes overlongs, surrogates
 * and code points above U+10FFFF). */
static size_t lead_info(uint8_t b, uint8_t *lo, uint8_t *hi) {
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

/* How many bytes at s form a valid character (need), or how many of its
 * leading bytes are a valid prefix (ok < need). */
static void scan_char(const uint8_t *s, size_t n, size_t *need, size_t *ok) {
  uint8_t lo, hi;
  *need = lead_info(s[0], &lo, &hi);
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

size_t dyn__utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
  if (n == 0) return 0;
  size_t need, ok;
  scan_char(s, n, &need, &ok);
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
    scan_char(s + i, n - i, &need, &ok);
    if (need == 0 || ok < need) break;
    i += need;
  }
  return i;
}

size_t dyn__utf8_lossy(const uint8_t *s, size_t n, bool final, char *out, size_t *out_len) {
  size_t i = 0, o = *out_len;
  while (i < n) {
    size_t need, ok;
    scan_char(s + i, n - i, &need, &ok);
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

/* ---- the incremental detokenizer ----------------------------------------- */

struct dyn_detok {
  const dyn_tokenizer_t *tk;
  unsigned flags;
  uint8_t *held; /* bytes of an incomplete character, at most 3 */
  size_t held_len, held_cap;
  char *out;
  size_t out_cap;
};

int dyn_detok_new(const dyn_tokenizer_t *tk, unsigned flags, dyn_detok_t **out) {
  if (!tk || !out) return DYN_EINVAL;
  dyn_detok_t *d = calloc(1, sizeof *d);
  if (!d) return DYN_ENOMEM;
  d->tk = tk;
  d->flags = flags;
  *out = d;
  return DYN_OK;
}

void dyn_detok_free(dyn_detok_t *d) {
  if (!d) return;
  free(d->held);
  free(d->out);
  free(d);
}

static int grow(void **p, size_t *cap, size_t need) {
  if (need <= *cap) return DYN_OK;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(*p, c);
  if (!q) return DYN_ENOMEM;
  *p = q;
  *cap = c;
  return DYN_OK;
}

/* Repairs held bytes into d->out; keeps an incomplete tail unless final. */
static int drain(dyn_detok_t *d, bool final, const char **text, size_t *len) {
  size_t n = 0;
  int rc = grow((void **)&d->out, &d->out_cap, 3 * d->held_len + 1);
  if (rc) return rc;
  size_t used = dyn__utf8_lossy(d->held, d->held_len, final, d->out, &n);
  if (used < d->held_len) memmove(d->held, d->held + used, d->held_len - used);
  d->held_len -= used;
  d->out[n] = '\0';
  *text = d->out;
  *len = n;
  return DYN_OK;
}

int dyn_detok_push(dyn_detok_t *d, uint32_t id, const char **text, size_t *len) {
  *text = "";
  *len = 0;
  size_t n;
  const uint8_t *b = dyn__tokenizer_bytes(d->tk, id, &n);
  if (!b) return DYN_EINVAL;
  if ((d->flags & DYN_DETOK_SKIP_SPECIAL) && dyn_tokenizer_is_special(d->tk, id)) return DYN_OK;
  if (n == 0) return DYN_OK;
  int rc = grow((void **)&d->held, &d->held_cap, d->held_len + n);
  if (rc) return rc;
  memcpy(d->held + d->held_len, b, n);
  d->held_len += n;
  return drain(d, false, text, len);
}

int dyn_detok_flush(dyn_detok_t *d, const char **text, size_t *len) {
  return drain(d, true, text, len);
}
