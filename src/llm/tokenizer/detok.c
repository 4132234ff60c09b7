/* detok.c - the incremental detokenizer.
 *
 * A byte-level BPE token is a run of bytes, not of characters: "é" or an
 * emoji can be split over two or four tokens. A streaming response must
 * not send half a character (a client decoding each SSE event would show
 * garbage), so the detokenizer holds the bytes of an incomplete character
 * until the token that completes it arrives. Bytes that can never become
 * valid UTF-8 are replaced with U+FFFD (src/common/utf8.h says how), which
 * gives the same text piece by piece as for the whole.
 */
#include <stdlib.h>
#include <string.h>

#include "llm/tokenizer/tok_internal.h"
#include "dynamo/status.h"
#include "common/array.h"

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

static int grow(void **p, size_t *cap, size_t need) { return dyn__grow(p, cap, need, 1); }

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
  const uint8_t *b = dyn_tokenizer_token_bytes(d->tk, id, &n);
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
