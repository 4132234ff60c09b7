/* tokenize_cli.c - the C tokenizer on stdin, for test_tokenizer_hf.py.
 *
 * The Python test compares our encoder with HF tokenizers and our split
 * patterns with the `regex` module; this tool gives it our side, one input
 * per line so that texts with newlines survive: every input line is a JSON
 * string (or, for decode, a JSON array of ids) and every output line is JSON.
 *
 *   tokenize_cli encode TOKENIZER.json   "text"  -> [ids]
 *   tokenize_cli decode TOKENIZER.json   [ids]   -> "text"  (special tokens kept)
 *   tokenize_cli detok TOKENIZER.json    [ids]   -> ["piece", ...] (one per push, then flush)
 *   tokenize_cli split gpt2|cl100k       "text"  -> ["piece", ...]
 *   tokenize_cli chat|chat-nogen MODEL.gguf [messages] -> "prompt" (the
 *       file's own chat template, with or without the generation prompt)
 *
 * An input the C side rejects prints {"error": "..."}.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/llm/chat.h"
#include "dynamo/llm/tokenizer.h"
#include "dynamo/status.h"
#include "llm/tokenizer/tok_internal.h"

static void emit(json_t *j) {
  char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
  puts(s ? s : "{\"error\":\"dump failed\"}");
  free(s);
  json_decref(j);
}

static json_t *error(const char *msg) { return json_pack("{ss}", "error", msg); }

static int piece(void *ud, const char *s, size_t n) {
  json_array_append_new((json_t *)ud, json_stringn(s, n));
  return 0;
}

static json_t *do_split(dyn__pretok_t *p, json_t *in) {
  if (!json_is_string(in)) return error("input is not a JSON string");
  dyn__pretok_run_t run;
  if (dyn__pretok_run_init(p, &run)) return error("out of memory");
  json_t *out = json_array();
  int rc = dyn__pretok_split(p, &run, json_string_value(in), json_string_length(in), piece, out);
  dyn__pretok_run_free(&run);
  if (rc) {
    json_decref(out);
    return error(dyn_strerror(rc));
  }
  return out;
}

static json_t *do_encode(dyn_tokenizer_t *tk, json_t *in) {
  if (!json_is_string(in)) return error("input is not a JSON string");
  dyn_tokens_t t = {0};
  int rc = dyn_tokenizer_encode(tk, json_string_value(in), json_string_length(in), &t);
  if (rc) return error(dyn_strerror(rc));
  json_t *out = json_array();
  for (size_t i = 0; i < t.len; i++) json_array_append_new(out, json_integer(t.ids[i]));
  dyn_tokens_free(&t);
  return out;
}

static int ids_of(json_t *in, uint32_t **ids, size_t *n) {
  if (!json_is_array(in)) return DYN_EINVAL;
  *n = json_array_size(in);
  *ids = malloc((*n ? *n : 1) * sizeof **ids);
  for (size_t i = 0; i < *n; i++) (*ids)[i] = (uint32_t)json_integer_value(json_array_get(in, i));
  return DYN_OK;
}

static json_t *do_decode(dyn_tokenizer_t *tk, json_t *in) {
  uint32_t *ids;
  size_t n, len;
  if (ids_of(in, &ids, &n)) return error("input is not a JSON array");
  char *text;
  int rc = dyn_tokenizer_decode(tk, ids, n, 0, &text, &len);
  free(ids);
  if (rc) return error(dyn_strerror(rc));
  json_t *out = json_stringn(text, len);
  free(text);
  return out ? out : error("decoded text is not valid UTF-8");
}

static json_t *do_detok(dyn_tokenizer_t *tk, json_t *in) {
  uint32_t *ids;
  size_t n, len;
  const char *s;
  if (ids_of(in, &ids, &n)) return error("input is not a JSON array");
  dyn_detok_t *d;
  dyn_detok_new(tk, 0, &d);
  json_t *out = json_array();
  int rc = DYN_OK;
  for (size_t i = 0; i < n && !rc; i++)
    if (!(rc = dyn_detok_push(d, ids[i], &s, &len))) json_array_append_new(out, json_stringn(s, len));
  if (!rc && !(rc = dyn_detok_flush(d, &s, &len))) json_array_append_new(out, json_stringn(s, len));
  dyn_detok_free(d);
  free(ids);
  if (rc) {
    json_decref(out);
    return error(dyn_strerror(rc));
  }
  return out;
}

static json_t *do_chat(const dyn_tokenizer_t *tk, json_t *in, bool gen) {
  dyn_chat_template_t t;
  char err[256], *text;
  size_t len;
  const char *jinja = dyn_tokenizer_chat_template(tk);
  if (!jinja) return error("the tokenizer has no chat template");
  if (dyn_chat_template_parse(jinja, &t, err, sizeof err)) return error(err);
  int rc = dyn_chat_template_render_json(&t, in, gen, &text, &len, err, sizeof err);
  dyn_chat_template_free(&t);
  if (rc) return error(err);
  json_t *out = json_stringn(text, len);
  free(text);
  return out;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s encode|decode|detok|chat|chat-nogen TOKENIZER | split gpt2|cl100k\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  dyn_tokenizer_t *tk = NULL;
  dyn__pretok_t pre = {0};
  char err[512];
  if (strcmp(mode, "split") == 0) {
    const char *pat = strcmp(argv[2], "cl100k") == 0 ? dyn__pat_cl100k : dyn__pat_gpt2;
    if (dyn__pretok_add(&pre, pat, strlen(pat), false, err, sizeof err)) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
  } else if (dyn_tokenizer_load_file(argv[2], &tk, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  static char line[1 << 20];
  while (fgets(line, sizeof line, stdin)) {
    json_error_t je;
    json_t *in = json_loads(line, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    json_t *out;
    if (!in) out = error(je.text);
    else if (tk && strcmp(mode, "encode") == 0) out = do_encode(tk, in);
    else if (tk && strcmp(mode, "decode") == 0) out = do_decode(tk, in);
    else if (tk && strcmp(mode, "detok") == 0) out = do_detok(tk, in);
    else if (tk && strncmp(mode, "chat", 4) == 0) out = do_chat(tk, in, strcmp(mode, "chat") == 0);
    else out = do_split(&pre, in);
    emit(out);
    json_decref(in);
    fflush(stdout);
  }
  dyn_tokenizer_free(tk);
  dyn__pretok_free(&pre);
  return 0;
}
