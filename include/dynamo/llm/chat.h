/* dynamo/llm/chat.h - built-in chat templates for the common model families.
 *
 * An OpenAI chat request is a list of messages; a model wants one prompt
 * string in the format it was fine-tuned on. These are that format for each
 * family, written in C: NOT a Jinja engine. A model's own chat_template
 * (a GGUF's tokenizer.chat_template) is recognised as one of the families
 * by the markers it writes, and a default system prompt it writes out
 * literally is kept (dyn_chat_template_parse); the rest of what a Jinja
 * template can do (tool calls, dates in system prompts) is not run.
 * Families and what each renders:
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

/* A family, plus the default system prompt a model's own template adds
 * when a conversation does not begin with a system message. */
typedef struct dyn_chat_template {
  dyn_chat_family_t family;
  char *default_system; /* malloc'd, NUL-terminated; NULL: none */
} dyn_chat_template_t;

/* Recognises a model's Jinja chat template (NUL-terminated) as a family by
 * the markers it writes: <|start_header_id|> -> llama3, <|im_start|> ->
 * chatml, <start_of_turn> -> gemma, <|user|> with <|end|> -> phi3, [INST]
 * -> mistral. For chatml, a system turn written out whole in one string
 * literal ('<|im_start|>system\n...<|im_end|>', as SmolLM2's and Qwen2's
 * templates have, Jinja escapes undone) is the default system prompt; it
 * is rendered first when the first message is not a system message (and
 * there is at least one message). DYN_EINVAL, with err saying so, for a
 * template that is none of the families (callers fall back to
 * dyn_chat_detect); DYN_ENOMEM. Free with dyn_chat_template_free. */
DYN_EXTERN int dyn_chat_template_parse(const char *jinja, dyn_chat_template_t *out, char *err,
                                       size_t errlen);
DYN_EXTERN void dyn_chat_template_free(dyn_chat_template_t *t);

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

/* The same with a template's default system prompt. */
DYN_EXTERN int dyn_chat_template_render(const dyn_chat_template_t *t, const dyn_chat_msg_t *msgs,
                                        size_t n, bool add_generation_prompt, char **out,
                                        size_t *out_len, char *err, size_t errlen);

/* The same from an OpenAI `messages` JSON array (a jansson json_t *):
 * each {"role": string, "content": string | null | [{"type":"text","text":...}, ...]}
 * (text parts are joined with no separator; other part types are an
 * error). err names the message and field that was wrong. */
struct json_t;
DYN_EXTERN int dyn_chat_render_json(dyn_chat_family_t f, const struct json_t *messages,
                         bool add_generation_prompt, char **out, size_t *out_len, char *err,
                         size_t errlen);
DYN_EXTERN int dyn_chat_template_render_json(const dyn_chat_template_t *t,
                                             const struct json_t *messages,
                                             bool add_generation_prompt, char **out,
                                             size_t *out_len, char *err, size_t errlen);

/* The strings that end an assistant turn in this family (static; NULL-
 * terminated list; plain has none). */
DYN_EXTERN const char *const *dyn_chat_stop_strings(dyn_chat_family_t f);

/* Their ids in tk, those it has, plus the ids tk's file says end
 * generation (dyn_tokenizer_end_ids: EOS, EOT, EOM) not among them; writes
 * at most cap and returns how many there are. */
DYN_EXTERN size_t dyn_chat_stop_ids(dyn_chat_family_t f, const dyn_tokenizer_t *tk, uint32_t *ids, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
