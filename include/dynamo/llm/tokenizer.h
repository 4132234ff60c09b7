/* dynamo/llm/tokenizer.h - byte-level BPE tokenizer and incremental detokenizer.
 *
 * The Processor turns a prompt into token ids for the engine and the
 * engine's ids back into text. This is the C side of both, reading the
 * Hugging Face `tokenizer.json` that ships with a model, or the tokenizer
 * inside a GGUF model file (llama.cpp's format):
 *
 *   dyn_tokenizer_t *tk;
 *   char err[256];
 *   if (dyn_tokenizer_load_file("tokenizer.json", &tk, err, sizeof err)) die(err);
 *   dyn_tokens_t ids = {0};
 *   dyn_tokenizer_encode(tk, text, strlen(text), &ids);   // appends to ids
 *   ...
 *   dyn_detok_t *d;
 *   dyn_detok_new(tk, DYN_DETOK_SKIP_SPECIAL, &d);
 *   for each generated id: dyn_detok_push(d, id, &piece, &n);  // new text only
 *   dyn_detok_flush(d, &piece, &n);
 *
 * Supported: model.type "BPE" with `vocab` and `merges` (merges as "a b"
 * strings or ["a","b"] arrays, `ignore_merges`), pre_tokenizer ByteLevel
 * and/or Split(Regex, behavior Isolated), alone or in a Sequence (GPT-2,
 * Llama 3 / cl100k, Qwen2 style), decoder ByteLevel, added_tokens matched
 * literally in the text, longest first, before pre-tokenization (as HF does
 * for special tokens). Split patterns run on PCRE2 (UTF + Unicode
 * properties), so any pattern a tokenizer.json carries works, not only two
 * built-in ones. Anything else (Unigram, WordPiece, byte_fallback, other
 * normalizers) fails to load with an error naming it; so do SentencePiece-
 * style BPE files (Metaspace + byte_fallback: Llama 2, Mistral v0.1-v0.3,
 * Gemma, Phi-3), which are not byte-level. Added tokens' lstrip, rstrip and
 * single_word flags are not applied (the byte-level families leave them off).
 *
 * From a GGUF file (tokenizer.ggml.*): tokenizer.ggml.model "gpt2" only
 * (byte-level BPE; "llama" SentencePiece, "bert", "t5" and others are
 * refused, naming the type), the pre-tokenizer named by tokenizer.ggml.pre
 * mapped to llama.cpp's split patterns for that name (default, llama3 /
 * llama-bpe, gpt-2, smollm, qwen2 and their aliases; another name is
 * refused, naming it), tokens typed CONTROL, USER_DEFINED or UNKNOWN
 * matched literally as llama_tokenize(parse_special=true) does, the
 * BOS/EOS/EOT/EOM/UNK ids, add_bos_token and tokenizer.chat_template.
 * The ids equal llama.cpp's llama_tokenize(add_special=false,
 * parse_special=true) (tests/llm/test_tokenizer_gguf.py), except that
 * overlapping literal tokens are matched leftmost-longest (llama.cpp takes
 * the longest everywhere first; no known vocabulary has such overlaps) and
 * that PCRE2's Unicode tables may be older than llama.cpp's for
 * characters assigned recently.
 *
 * Encoding is the equivalent of HF's `encode(text, add_special_tokens=False)`:
 * no post-processor (a chat template puts BOS in the text itself). An NFC
 * normalizer is accepted but NOT applied: text is assumed to be NFC already,
 * which JSON from OpenAI clients almost always is.
 *
 * Threading: a loaded tokenizer is immutable; encode, decode and lookups may
 * run on any number of threads at once. A detokenizer belongs to one thread.
 * Every call that can fail returns a dynamo/status.h code.
 */
#ifndef DYNAMO_LLM_TOKENIZER_H
#define DYNAMO_LLM_TOKENIZER_H

#include "dynamo/export.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_tokenizer dyn_tokenizer_t;

/* A growable array of token ids. Zero-initialise; encode appends; free with
 * dyn_tokens_free (which leaves it empty and reusable). */
typedef struct dyn_tokens {
  uint32_t *ids;
  size_t len, cap;
} dyn_tokens_t;

DYN_EXTERN void dyn_tokens_free(dyn_tokens_t *t);

/* Loads a tokenizer.json from a file or from memory (`name` labels errors,
 * e.g. the path it came from); load_file also takes a GGUF model file (one
 * that starts with the bytes "GGUF"). On failure returns DYN_EINVAL (bad
 * or unsupported content), DYN_ENOTFOUND/DYN_ESYS (file) or DYN_ENOMEM,
 * and writes a sentence naming the file and what was wrong into err (may
 * be NULL), e.g. "tokenizer.json: model.type 'Unigram' is not supported
 * (byte-level BPE only)" or "m.gguf: tokenizer.ggml.model 'llama'
 * (SentencePiece BPE) is not supported (byte-level BPE, 'gpt2', only)". */
DYN_EXTERN int dyn_tokenizer_load_file(const char *path, dyn_tokenizer_t **out, char *err, size_t errlen);
DYN_EXTERN int dyn_tokenizer_load_buf(const char *json, size_t len, const char *name,
                           dyn_tokenizer_t **out, char *err, size_t errlen);
DYN_EXTERN void dyn_tokenizer_free(dyn_tokenizer_t *tk);

/* Encodes text (UTF-8, len bytes, need not be NUL-terminated) and appends
 * the ids to out. DYN_EINVAL if the text is not valid UTF-8 (nothing is
 * appended then), DYN_ENOMEM. */
DYN_EXTERN int dyn_tokenizer_encode(const dyn_tokenizer_t *tk, const char *text, size_t len,
                         dyn_tokens_t *out);

/* Decode flags. */
#define DYN_DETOK_SKIP_SPECIAL 1u /* leave out added tokens marked special */

/* Decodes ids to a malloc'd, NUL-terminated UTF-8 string (*out, length
 * *out_len without the NUL). Bytes that do not form valid UTF-8 become
 * U+FFFD, one per maximal invalid subsequence (as HF/Rust's lossy decode).
 * DYN_EINVAL names no id: an id outside the vocabulary fails the call. */
DYN_EXTERN int dyn_tokenizer_decode(const dyn_tokenizer_t *tk, const uint32_t *ids, size_t n,
                         unsigned flags, char **out, size_t *out_len);

/* Number of ids: one more than the largest id (vocab and added tokens). */
DYN_EXTERN uint32_t dyn_tokenizer_vocab_size(const dyn_tokenizer_t *tk);

/* The id of a token given as it appears in tokenizer.json (byte-level form,
 * e.g. "Ġthe", or an added token such as "<|eot_id|>"). DYN_ENOTFOUND if
 * there is none. */
DYN_EXTERN int dyn_tokenizer_token_id(const dyn_tokenizer_t *tk, const char *tok, size_t len, uint32_t *id);

/* The token string of an id as in tokenizer.json (not NUL-terminated; its
 * length in *len), or NULL for an id that has none. */
DYN_EXTERN const char *dyn_tokenizer_token_str(const dyn_tokenizer_t *tk, uint32_t id, size_t *len);

/* The bytes id decodes to (not NUL-terminated, possibly part of a UTF-8
 * character; their length in *len), or NULL for an id that has none: what
 * OpenAI's logprobs show as a token's "bytes". */
DYN_EXTERN const uint8_t *dyn_tokenizer_token_bytes(const dyn_tokenizer_t *tk, uint32_t id,
                                                    size_t *len);

/* 1 if id is an added token marked special, else 0. */
DYN_EXTERN int dyn_tokenizer_is_special(const dyn_tokenizer_t *tk, uint32_t id);

/* BOS/EOS ids, when an added token has a well-known name (<|begin_of_text|>,
 * <s>, <bos>, <|startoftext|> / <|end_of_text|>, <|endoftext|>, </s>, <eos>).
 * DYN_ENOTFOUND otherwise. */
DYN_EXTERN int dyn_tokenizer_bos_id(const dyn_tokenizer_t *tk, uint32_t *id);
DYN_EXTERN int dyn_tokenizer_eos_id(const dyn_tokenizer_t *tk, uint32_t *id);

/* The ids that end generation as the file names them: EOS, and from a
 * GGUF file also EOT and EOM (tokenizer.ggml.eot_token_id, ...), each
 * once. Writes at most cap; returns how many there are. */
DYN_EXTERN size_t dyn_tokenizer_end_ids(const dyn_tokenizer_t *tk, uint32_t *ids, size_t cap);

/* 1 if the file asks for BOS before a prompt (a GGUF's
 * tokenizer.ggml.add_bos_token, or llama.cpp's default for its
 * pre-tokenizer); a tokenizer.json: 0 (its post-processor is not read). */
DYN_EXTERN int dyn_tokenizer_add_bos(const dyn_tokenizer_t *tk);

/* The model's own chat template (Jinja text, a GGUF's
 * tokenizer.chat_template), NUL-terminated, or NULL when the file has
 * none (always NULL for a tokenizer.json). See dynamo/llm/chat.h. */
DYN_EXTERN const char *dyn_tokenizer_chat_template(const dyn_tokenizer_t *tk);

/* ---- incremental detokenizer -------------------------------------------- */

/* Turns ids, one at a time, into text as soon as it is complete: a UTF-8
 * character split over several tokens comes out whole, with the token that
 * completes it. Bytes that can no longer become a valid character come out
 * as U+FFFD when that is certain; the concatenation of everything returned
 * (pushes, then flush) equals dyn_tokenizer_decode of all the ids with the
 * same flags. The tokenizer must outlive the detokenizer. */
typedef struct dyn_detok dyn_detok_t;

DYN_EXTERN int dyn_detok_new(const dyn_tokenizer_t *tk, unsigned flags, dyn_detok_t **out);
DYN_EXTERN void dyn_detok_free(dyn_detok_t *d);

/* Adds one id. *text and *len get the newly completed text (possibly empty,
 * len 0), valid until the next call on d. DYN_EINVAL for an unknown id. */
DYN_EXTERN int dyn_detok_push(dyn_detok_t *d, uint32_t id, const char **text, size_t *len);

/* Ends the sequence: held incomplete bytes come out as U+FFFD. The
 * detokenizer is then empty and may start a new sequence. */
DYN_EXTERN int dyn_detok_flush(dyn_detok_t *d, const char **text, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
