/* llama_tokenize_ref.c - llama.cpp's own tokenizer on stdin, the reference
 * test_tokenizer_gguf.py holds ours to.
 *
 *   llama_tokenize_ref MODEL.gguf   "text" -> [ids]    (one JSON line each)
 *
 * Loads only the model's vocabulary (vocab_only: no weights) and calls
 * llama_tokenize(add_special=false, parse_special=true): no BOS added, and
 * special tokens written in the text become their ids, which is what the
 * Processor's encoding of a rendered chat prompt means.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
  (void)ud;
  if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.gguf < json-lines\n", argv[0]);
    return 2;
  }
  llama_log_set(quiet, NULL);
  llama_backend_init();
  struct llama_model_params mp = llama_model_default_params();
  mp.vocab_only = true;
  struct llama_model *model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    fprintf(stderr, "%s: llama.cpp cannot load it\n", argv[1]);
    return 1;
  }
  const struct llama_vocab *vocab = llama_model_get_vocab(model);
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  int32_t *ids = NULL;
  size_t ids_cap = 0;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    json_error_t je;
    json_t *in = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!json_is_string(in)) {
      fprintf(stderr, "input is not a JSON string: %s\n", line);
      return 1;
    }
    const char *s = json_string_value(in);
    int32_t len = (int32_t)json_string_length(in);
    int32_t k = llama_tokenize(vocab, s, len, ids, (int32_t)ids_cap, false, true);
    if (k < 0) {
      ids_cap = (size_t)-k;
      ids = realloc(ids, ids_cap * sizeof *ids);
      if (!ids) return 1;
      k = llama_tokenize(vocab, s, len, ids, (int32_t)ids_cap, false, true);
    }
    if (k < 0) {
      fprintf(stderr, "llama_tokenize failed (%d)\n", k);
      return 1;
    }
    json_t *out = json_array();
    for (int32_t i = 0; i < k; i++) json_array_append_new(out, json_integer(ids[i]));
    char *dump = json_dumps(out, JSON_COMPACT);
    puts(dump);
    fflush(stdout);
    free(dump);
    json_decref(out);
    json_decref(in);
  }
  free(ids);
  free(line);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
