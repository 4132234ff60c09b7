/* pretok.c - the pre-tokenizer: regex splits, and GPT-2's byte-level map.
 *
 * Byte-level BPE never merges across the pieces a split pattern cuts text
 * into, so the split must be exactly the reference's or the ids differ.
 * The patterns use Unicode properties (\p{L}, \p{N}) and a lookahead
 * (\s+(?!\S)). We run them on PCRE2 with PCRE2_UTF | PCRE2_UCP (JIT
 * compiled) instead of hand-written state machines: tests/llm/
 * test_tokenizer_hf.py checks PCRE2's splits against Python's `regex`
 * module and the ids against HF `tokenizers` on varied Unicode text, and a
 * library means any pattern a tokenizer.json carries (Llama 3, Qwen2, ...)
 * works, not only two we transcribed.
 *
 * One difference had to be fixed: PCRE2 10.42's \s under UCP also matches
 * U+001C..U+001F and U+180E, which Oniguruma (HF) and `regex` do not count
 * as white space (Unicode's White_Space property). So \s and \S in a
 * pattern are rewritten to that explicit set before compiling. The edge
 * cases (U+0085, U+00A0, U+1680, U+180E, U+2028, U+2029, U+3000, U+001C)
 * are in the test's corpus.
 *
 * Split behaviour is HF's "Isolated": each match is a piece and so is each
 * gap between matches. Empty matches are skipped.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/tokenizer/tok_internal.h"
#include "dynamo/status.h"

const char dyn__pat_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* As in Llama 3's tokenizer.json (tiktoken's cl100k_base, without the
 * possessive quantifiers, which give the same splits). */
const char dyn__pat_cl100k[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Unicode's White_Space, the set Oniguruma's \s matches. */
#define WS "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* Rewrites \s and \S to the explicit White_Space set: "[WS]" / "[^WS]"
 * outside a character class, "WS" inside one (\S inside a class has no
 * such spelling and is refused). Other escapes are copied untouched. */
static int rewrite_ws(const char *pat, size_t n, char **out, size_t *out_n, char *err,
                      size_t errlen) {
  size_t cap = n + 1, k = 0;
  for (size_t i = 0; i + 1 < n; i++)
    if (pat[i] == '\\') cap += sizeof WS + 3, i++;
  char *o = malloc(cap);
  if (!o) return DYN_ENOMEM;
  bool in_class = false;
  for (size_t i = 0; i < n; i++) {
    char c = pat[i];
    if (c == '\\' && i + 1 < n) {
      char e = pat[++i];
      if (e == 's' || e == 'S') {
        if (in_class && e == 'S') {
          free(o);
          snprintf(err, errlen, "\\S inside a character class is not supported");
          return DYN_EINVAL;
        }
        const char *pre = in_class ? "" : e == 's' ? "[" : "[^", *post = in_class ? "" : "]";
        k += (size_t)sprintf(o + k, "%s%s%s", pre, WS, post);
      } else {
        o[k++] = c;
        o[k++] = e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      o[k++] = c;
      if (i + 1 < n && pat[i + 1] == '^') o[k++] = pat[++i];
      if (i + 1 < n && pat[i + 1] == ']') o[k++] = pat[++i]; /* "[]...]": literal ] */
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    o[k++] = c;
  }
  *out = o;
  *out_n = k;
  return DYN_OK;
}

int dyn__pretok_add(dyn__pretok_t *p, const char *pattern, size_t len, bool literal,
                    char *err, size_t errlen) {
  if (p->n == DYN__PRETOK_MAX_STEPS) {
    snprintf(err, errlen, "more than %d split steps", DYN__PRETOK_MAX_STEPS);
    return DYN_EINVAL;
  }
  int ecode;
  PCRE2_SIZE eoff;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  char *pat = NULL;
  size_t plen = len;
  if (!literal) {
    int rc = rewrite_ws(pattern, len, &pat, &plen, err, errlen);
    if (rc) return rc;
  }
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)(pat ? pat : pattern), plen, opts, &ecode, &eoff, NULL);
  free(pat);
  if (!code) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(ecode, msg, sizeof msg);
    snprintf(err, errlen, "split pattern does not compile at offset %zu: %s", (size_t)eoff,
             (const char *)msg);
    return DYN_EINVAL;
  }
  /* JIT is several times faster; where it is unavailable the interpreter
   * gives the same results, so a failure here is not an error. */
  p->jit[p->n] = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  p->code[p->n++] = code;
  return DYN_OK;
}

void dyn__pretok_free(dyn__pretok_t *p) {
  for (int i = 0; i < p->n; i++) pcre2_code_free((pcre2_code *)p->code[i]);
  p->n = 0;
}

int dyn__pretok_run_init(const dyn__pretok_t *p, dyn__pretok_run_t *r) {
  memset(r, 0, sizeof *r);
  for (int i = 0; i < p->n; i++) {
    r->md[i] = pcre2_match_data_create_from_pattern((const pcre2_code *)p->code[i], NULL);
    if (!r->md[i]) {
      dyn__pretok_run_free(r);
      return DYN_ENOMEM;
    }
  }
  return DYN_OK;
}

void dyn__pretok_run_free(dyn__pretok_run_t *r) {
  for (int i = 0; i < DYN__PRETOK_MAX_STEPS; i++) {
    pcre2_match_data_free((pcre2_match_data *)r->md[i]);
    r->md[i] = NULL;
  }
}

/* One match from pos: pcre2_jit_match where JIT compiled (it skips
 * pcre2_match's checks, 8% of an encode's profile before). The JIT's
 * fixed stack can run out on pathological input (a megabyte of spaces
 * against \s+(?!\S)); the interpreter keeps its backtracking on the heap,
 * so that match is retried there. */
static int match_at(const pcre2_code *code, bool jit, pcre2_match_data *md, const char *s,
                    size_t n, size_t pos) {
  int rc = jit ? pcre2_jit_match(code, (PCRE2_SPTR)s, n, pos, 0, md, NULL)
               : pcre2_match(code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
    rc = pcre2_match(code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
  return rc;
}

static size_t utf8_len(uint8_t lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

static int split_step(const dyn__pretok_t *p, dyn__pretok_run_t *r, int step, const char *s,
                      size_t n, dyn__piece_fn fn, void *ud) {
  if (step == p->n) return n ? fn(ud, s, n) : 0;
  const pcre2_code *code = (const pcre2_code *)p->code[step];
  pcre2_match_data *md = (pcre2_match_data *)r->md[step];
  size_t pos = 0, gap = 0;
  int rc;
  while (pos < n) {
    int m = match_at(code, p->jit[step], md, s, n, pos);
    if (m == PCRE2_ERROR_NOMATCH) break;
    if (m < 0) return m == PCRE2_ERROR_NOMEMORY ? DYN_ENOMEM : DYN_EINVAL;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    if (e <= b) { /* empty match: no piece; look again one character on */
      if (b >= n) break;
      pos = b + utf8_len((uint8_t)s[b]);
      continue;
    }
    if (b > gap && (rc = split_step(p, r, step + 1, s + gap, b - gap, fn, ud))) return rc;
    if ((rc = split_step(p, r, step + 1, s + b, e - b, fn, ud))) return rc;
    gap = pos = e;
  }
  return gap < n ? split_step(p, r, step + 1, s + gap, n - gap, fn, ud) : 0;
}

int dyn__pretok_split(const dyn__pretok_t *p, dyn__pretok_run_t *r, const char *s, size_t n,
                      dyn__piece_fn fn, void *ud) {
  return split_step(p, r, 0, s, n, fn, ud);
}

/* GPT-2's bytes_to_unicode(): the printable Latin-1 bytes stand for
 * themselves; the other 68 (0-32, 127-160, 173), in order, become
 * U+0100.. U+0143 so every byte has a visible, unambiguous character. */
uint32_t dyn__bytelevel_cp(uint8_t b) {
  if (b <= 32) return 256u + b;
  if (b >= 127 && b <= 160) return 162u + b;
  if (b == 173) return 323;
  return b;
}

int dyn__bytelevel_byte(uint32_t cp) {
  if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 255 && cp != 173)) return (int)cp;
  if (cp >= 256 && cp <= 288) return (int)(cp - 256);
  if (cp >= 289 && cp <= 322) return (int)(cp - 162);
  if (cp == 323) return 173;
  return -1;
}
