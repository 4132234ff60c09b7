/* fuzz_tokenizer.c - the tokenizer loader and encoder on arbitrary bytes.
 *
 * tokenizer.json files come from wherever a model was downloaded, and
 * prompt text comes from any HTTP client, so both are fuzzed. The first
 * byte picks what the rest is:
 *
 *  - even: a tokenizer.json. Loading must succeed or fail with a message;
 *    a tokenizer that loads must encode and decode a fixed text.
 *  - odd: prompt text for the fixture tokenizer (tests/llm/data). Invalid
 *    UTF-8 must be refused; valid text must round-trip exactly
 *    (decode(encode(x)) == x), and the incremental detokenizer's pieces
 *    must join to the same text. The text also goes through a chat
 *    template as a message's content, and through the JSON string
 *    escaper as model output would: the result must parse (jansson checks
 *    UTF-8) and give back the text exactly when it is valid UTF-8.
 *
 * Any broken property aborts; ASan/UBSan catch overruns and leaks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/llm/chat.h"
#include "dynamo/llm/tokenizer.h"
#include "dynamo/status.h"
#include "common/json_escape.h"
#include "common/utf8.h"

#include <jansson.h>

static dyn_tokenizer_t *fixture;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[256];
  if (dyn_tokenizer_load_file(FUZZ_TOKENIZER, &fixture, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    abort();
  }
  return 0;
}

static void check_roundtrip(const dyn_tokenizer_t *tk, const char *s, size_t n) {
  dyn_tokens_t t = {0};
  int rc = dyn_tokenizer_encode(tk, s, n, &t);
  if (rc == DYN_EINVAL) return; /* not UTF-8 */
  if (rc) abort();
  char *back;
  size_t len;
  if (dyn_tokenizer_decode(tk, t.ids, t.len, 0, &back, &len)) abort();
  if (tk == fixture && (len != n || memcmp(back, s, n) != 0)) abort();
  dyn_detok_t *d;
  if (dyn_detok_new(tk, 0, &d)) abort();
  size_t k = 0, plen;
  const char *p;
  for (size_t i = 0; i < t.len; i++) {
    if (dyn_detok_push(d, t.ids[i], &p, &plen) || k + plen > len || memcmp(back + k, p, plen)) abort();
    k += plen;
  }
  if (dyn_detok_flush(d, &p, &plen) || k + plen != len || memcmp(back + k, p, plen)) abort();
  dyn_detok_free(d);
  free(back);
  dyn_tokens_free(&t);
}

static void check_json_escape(const char *s, size_t n) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  if (dyn__json_escape(&b, s, n)) abort();
  json_t *v = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  if (!v || !json_is_string(v)) abort();
  int valid = dyn__utf8_valid_prefix((const uint8_t *)s, n) == n;
  if (valid && (json_string_length(v) != n || memcmp(json_string_value(v), s, n))) abort();
  json_decref(v);
  dyn__buf_free(&b);
}

static void fuzz_text(const char *s, size_t n) {
  check_roundtrip(fixture, s, n);
  check_json_escape(s, n);
  dyn_chat_msg_t m[] = {{"system", "Be brief.", 9}, {"user", s, n}};
  char *out;
  size_t len;
  for (int f = DYN_CHAT_PLAIN; f <= DYN_CHAT_PHI3; f++) {
    if (dyn_chat_render((dyn_chat_family_t)f, m, 2, true, &out, &len, NULL, 0)) abort();
    free(out);
  }
}

static void fuzz_json(const char *s, size_t n) {
  dyn_tokenizer_t *tk = NULL;
  char err[256];
  int rc = dyn_tokenizer_load_buf(s, n, "fuzz.json", &tk, err, sizeof err);
  if (rc) {
    if (strncmp(err, "fuzz.json: ", 11) != 0) abort(); /* every error names the file */
    return;
  }
  static const char text[] = "Hello <|eot_id|> caf\xC3\xA9 \xF0\x9F\x8E\x89 12345  \n\n x";
  check_roundtrip(tk, text, sizeof text - 1);
  dyn_tokenizer_free(tk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  /* a private copy, so ASan sees reads past the end of the input */
  char *s = malloc(size - 1 ? size - 1 : 1);
  memcpy(s, data + 1, size - 1);
  if (data[0] & 1) fuzz_text(s, size - 1);
  else fuzz_json(s, size - 1);
  free(s);
  return 0;
}
