/* dynamo/llm/chat.h - built-in chat templates for the common model families.
 *
 * An OpenAI chat request is a list of messages; a model wants one prompt
 * string in the format it was fine-tuned on. These are that format for each
 * family, written in C: NOT a Jinja engine, and a model's own
 * chat_template (tool calls, dates in system prompts, default system
 * messages) is not read. Families and what each renders:
 *
 *   llama3   <|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>...
 *            (content trimmed, as the Llama 3 template does)
 *   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n...  (Qwen and many others)
 *   mistral  <s>[INST] SYSTEM\n\nUSER [/INST]ASSISTANT</s>[INST] USER [/INST]
 *            (v0.1/v0.2 layout; system merged into the first user turn;
 *            the generation prompt is implicit)
 *   gemma    <bos><start_of_turn>user\nSYSTEM\n\nUSER<end_of_turn>\n<start_of_turn>model\n...
 *            (assistant is "model"; system merged into the first user turn,
 *            as Gemma 3 does; content trimmed)
 *   phi3     <|system|>\nCONTENT<|end|>\n<|user|>\n...<|end|>\n
 *   plain    ROLE: CONTENT\n lines (the fallback)
 *
 * add_generation_prompt appends the opening of an assistant turn
 * (llama3: <|start_header_id|>assistant<|end_header_id|>\n\n; chatml:
 * <|im_start|>assistant\n; gemma: <start_of_turn>model\n; phi3:
 * <|assistant|>\n; plain: "assistant: ").
 */
#ifndef DYNAMO_LLM_CHAT_H
#define DYNAMO_LLM_CHAT_H

#include "dynamo/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dynamo/llm/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dyn_chat_family {
  DYN_CHAT_PLAIN = 0,
  DYN_CHAT_LLAMA3,
  DYN_CHAT_CHATML,
  DYN_CHAT_MISTRAL,
  DYN_CHAT_GEMMA,
  DYN_CHAT_PHI3
} dyn_chat_family_t;

/* "llama3", "chatml", "mistral", "gemma", "phi3", "plain" (DYN_EINVAL else). */
DYN_EXTERN int dyn_chat_family_from_name(const char *name, dyn_chat_family_t *out);
DYN_EXTERN const char *dyn_chat_family_name(dyn_chat_family_t f);

/* The family whose special tokens the tokenizer has: <|eot_id|> or
 * <|start_header_id|> -> llama3, <|im_start|> -> chatml, <start_of_turn> ->
 * gemma, <|user|> with <|end|> -> phi3, [INST] (or, failing all else, <s>
 * with </s>) -> mistral; otherwise plain. tk may be NULL (plain). */
DYN_EXTERN dyn_chat_family_t dyn_chat_detect(const dyn_tokenizer_t *tk);

/* One message. content may be NULL (empty); content_len is its length. */
typedef struct dyn_chat_msg {
  const char *role;
  const char *content;
  size_t content_len;
} dyn_chat_msg_t;

/* Renders messages to a malloc'd, NUL-terminated prompt (*out, *out_len).
 * DYN_EINVAL, with a sentence in err, for a role the family cannot express
 * (mistral, gemma and phi3 take system, user and assistant only). */
DYN_EXTERN int dyn_chat_render(dyn_chat_family_t f, const dyn_chat_msg_t *msgs, size_t n,
                    bool add_generation_prompt, char **out, size_t *out_len, char *err,
                    size_t errlen);

/* The same from an OpenAI `messages` JSON array (a jansson json_t *):
 * each {"role": string, "content": string | null | [{"type":"text","text":...}, ...]}
 * (text parts are joined with no separator; other part types are an
 * error). err names the message and field that was wrong. */
struct json_t;
DYN_EXTERN int dyn_chat_render_json(dyn_chat_family_t f, const struct json_t *messages,
                         bool add_generation_prompt, char **out, size_t *out_len, char *err,
                         size_t errlen);

/* The strings that end an assistant turn in this family (static; NULL-
 * terminated list; plain has none). */
DYN_EXTERN const char *const *dyn_chat_stop_strings(dyn_chat_family_t f);

/* Their ids in tk, those it has, plus tk's EOS if not among them; writes at
 * most cap and returns how many there are. */
DYN_EXTERN size_t dyn_chat_stop_ids(dyn_chat_family_t f, const dyn_tokenizer_t *tk, uint32_t *ids, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
