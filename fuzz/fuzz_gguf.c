/* fuzz_gguf.c - the GGUF reader and the tokenizer built from a GGUF file.
 *
 * Model files come from wherever a model was downloaded. Any bytes must
 * either load or be refused with a message naming the file; a tokenizer
 * that loads must encode and decode a fixed text, and render its own chat
 * template if it has one. ASan/UBSan catch reads past the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/llm/chat.h"
#include "dynamo/llm/tokenizer.h"
#include "dynamo/status.h"
#include "llm/tokenizer/tok_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A copy of exactly size bytes, so ASan sees any read past the end. */
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  dyn_tokenizer_t *tk = NULL;
  char err[512] = "";
  int rc = dyn__tokenizer_load_gguf_buf(copy, size, "f.gguf", &tk, err, sizeof err);
  if (rc && (tk || strncmp(err, "f.gguf: ", 8) != 0)) abort();
  if (!rc) {
    static const char text[] = "Hello, world! 123 <|im_start|>\n\t  x";
    dyn_tokens_t t = {0};
    if (dyn_tokenizer_encode(tk, text, sizeof text - 1, &t)) abort();
    char *back;
    size_t len;
    if (dyn_tokenizer_decode(tk, t.ids, t.len, 0, &back, &len)) abort();
    free(back);
    dyn_tokens_free(&t);
    dyn_chat_template_t ct;
    const char *jinja = dyn_tokenizer_chat_template(tk);
    if (jinja && dyn_chat_template_parse(jinja, &ct, err, sizeof err) == DYN_OK) {
      dyn_chat_msg_t m = {"user", "hi", 2};
      char *p;
      if (dyn_chat_template_render(&ct, &m, 1, true, &p, &len, err, sizeof err) == DYN_OK) free(p);
      dyn_chat_template_free(&ct);
    }
    dyn_tokenizer_free(tk);
  }
  free(copy);
  return 0;
}
