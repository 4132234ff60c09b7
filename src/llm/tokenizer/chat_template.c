/* chat_template.c - OpenAI messages to a prompt, per model family.
 *
 * Each family's layout is a few string pieces around each message (see
 * dynamo/llm/chat.h for the exact shapes). They are written out here in C
 * rather than run from the model's Jinja template: the Processor needs the
 * common families, exactly, at no cost per request, and a Jinja engine in C
 * is a project of its own. The renderings match the families' reference
 * templates for system/user/assistant conversations
 * (tests/llm/test_chat_template.c has them verbatim). A model's own
 * template (from a GGUF file) is read only to tell its family and the
 * default system prompt it writes out literally (template_parse below);
 * tests/llm/test_tokenizer_gguf.py renders SmolLM2's with Jinja and
 * compares.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/llm/chat.h"
#include "dynamo/status.h"
#include "common/buf.h"

static const char *const NAMES[] = {"plain", "llama3", "chatml", "mistral", "gemma", "phi3"};
#define N_FAMILIES (sizeof NAMES / sizeof *NAMES)

int dyn_chat_family_from_name(const char *name, dyn_chat_family_t *out) {
  for (size_t i = 0; name && i < N_FAMILIES; i++)
    if (strcmp(name, NAMES[i]) == 0) {
      *out = (dyn_chat_family_t)i;
      return DYN_OK;
    }
  return DYN_EINVAL;
}

const char *dyn_chat_family_name(dyn_chat_family_t f) {
  return (size_t)f < N_FAMILIES ? NAMES[f] : "unknown";
}

static bool has(const dyn_tokenizer_t *tk, const char *tok) {
  uint32_t id;
  return dyn_tokenizer_token_id(tk, tok, strlen(tok), &id) == DYN_OK;
}

dyn_chat_family_t dyn_chat_detect(const dyn_tokenizer_t *tk) {
  if (!tk) return DYN_CHAT_PLAIN;
  if (has(tk, "<|eot_id|>") || has(tk, "<|start_header_id|>")) return DYN_CHAT_LLAMA3;
  if (has(tk, "<|im_start|>")) return DYN_CHAT_CHATML;
  if (has(tk, "<start_of_turn>")) return DYN_CHAT_GEMMA;
  if (has(tk, "<|user|>") && has(tk, "<|end|>")) return DYN_CHAT_PHI3;
  if (has(tk, "[INST]") || (has(tk, "<s>") && has(tk, "</s>"))) return DYN_CHAT_MISTRAL;
  return DYN_CHAT_PLAIN;
}

static const char *const STOP_LLAMA3[] = {"<|eot_id|>", "<|end_of_text|>", NULL};
static const char *const STOP_CHATML[] = {"<|im_end|>", "<|endoftext|>", NULL};
static const char *const STOP_MISTRAL[] = {"</s>", NULL};
static const char *const STOP_GEMMA[] = {"<end_of_turn>", "<eos>", NULL};
static const char *const STOP_PHI3[] = {"<|end|>", "<|endoftext|>", NULL};
static const char *const STOP_NONE[] = {NULL};

const char *const *dyn_chat_stop_strings(dyn_chat_family_t f) {
  switch (f) {
  case DYN_CHAT_LLAMA3: return STOP_LLAMA3;
  case DYN_CHAT_CHATML: return STOP_CHATML;
  case DYN_CHAT_MISTRAL: return STOP_MISTRAL;
  case DYN_CHAT_GEMMA: return STOP_GEMMA;
  case DYN_CHAT_PHI3: return STOP_PHI3;
  default: return STOP_NONE;
  }
}

size_t dyn_chat_stop_ids(dyn_chat_family_t f, const dyn_tokenizer_t *tk, uint32_t *ids, size_t cap) {
  if (!tk) return 0;
  uint32_t found[16], end[4], id;
  size_t n = 0, n_end = dyn_tokenizer_end_ids(tk, end, 4);
  for (const char *const *s = dyn_chat_stop_strings(f); *s && n < 16; s++)
    if (dyn_tokenizer_token_id(tk, *s, strlen(*s), &id) == DYN_OK) found[n++] = id;
  for (size_t i = 0; i < n_end && i < 4 && n < 16; i++) {
    bool listed = false;
    for (size_t k = 0; k < n && !listed; k++) listed = found[k] == end[i];
    if (!listed) found[n++] = end[i];
  }
  for (size_t i = 0; i < n && i < cap; i++) ids[i] = found[i];
  return n;
}

/* ---- a model's own template ---------------------------------------------- */

/* The Jinja string literal that starts at q (a quote) unescaped into b, up
 * to `end` inside it; false if the literal closes (or the text ends)
 * before `end`, i.e. the text is not all literal. */
static bool literal_until(const char *q, const char *end, dyn__buf_t *b, const char **after) {
  char quote = *q;
  size_t n_end = strlen(end);
  for (const char *p = q + 1; *p; p++) {
    if (strncmp(p, end, n_end) == 0) {
      *after = p;
      return true;
    }
    if (*p == quote) return false;
    char c = *p;
    if (c == '\\' && p[1]) {
      p++;
      c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p;
    }
    if (dyn__buf_append(b, &c, 1)) return false;
  }
  return false;
}

/* The first literal '<|im_start|>system\n...<|im_end|>' in the template. */
static int chatml_default_system(const char *t, char **out) {
  static const char open[] = "<|im_start|>system";
  *out = NULL;
  for (const char *p = strstr(t, open); p; p = strstr(p + 1, open)) {
    if (p == t || (p[-1] != '\'' && p[-1] != '"')) continue; /* not a literal's start */
    dyn__buf_t b;
    dyn__buf_init(&b);
    const char *after;
    bool whole = literal_until(p - 1, "<|im_end|>", &b, &after);
    /* The literal is "<|im_start|>system" NEWLINE CONTENT. */
    size_t skip = sizeof open - 1;
    if (whole && b.len > skip && b.data[skip] == '\n') {
      size_t n = b.len - skip - 1;
      char *s = malloc(n + 1);
      if (!s) {
        dyn__buf_free(&b);
        return DYN_ENOMEM;
      }
      memcpy(s, b.data + skip + 1, n);
      s[n] = '\0';
      dyn__buf_free(&b);
      *out = s;
      return DYN_OK;
    }
    dyn__buf_free(&b);
  }
  return DYN_OK;
}

int dyn_chat_template_parse(const char *jinja, dyn_chat_template_t *out, char *err, size_t errlen) {
  static const struct {
    const char *mark, *also;
    dyn_chat_family_t f;
  } MARKS[] = {{"<|start_header_id|>", NULL, DYN_CHAT_LLAMA3},
               {"<|im_start|>", NULL, DYN_CHAT_CHATML},
               {"<start_of_turn>", NULL, DYN_CHAT_GEMMA},
               {"<|user|>", "<|end|>", DYN_CHAT_PHI3},
               {"[INST]", NULL, DYN_CHAT_MISTRAL}};
  if (!out || !jinja) return DYN_EINVAL;
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < sizeof MARKS / sizeof *MARKS; i++) {
    if (!strstr(jinja, MARKS[i].mark) || (MARKS[i].also && !strstr(jinja, MARKS[i].also))) continue;
    out->family = MARKS[i].f;
    return out->family == DYN_CHAT_CHATML ? chatml_default_system(jinja, &out->default_system)
                                          : DYN_OK;
  }
  if (err && errlen)
    snprintf(err, errlen, "the chat template is none of the built-in families (llama3, chatml, "
             "mistral, gemma, phi3)");
  return DYN_EINVAL;
}

void dyn_chat_template_free(dyn_chat_template_t *t) {
  if (!t) return;
  free(t->default_system);
  t->default_system = NULL;
}

/* ---- rendering ------------------------------------------------------------ */

/* The project's byte buffer with a sticky out-of-memory flag, so the
 * renderers append freely and the result is checked once. */
typedef struct sbuf {
  dyn__buf_t buf;
  bool oom;
} sbuf_t;

static void put(sbuf_t *b, const char *s, size_t n) {
  /* One byte more: the text stays NUL-terminated, a C string. */
  if (b->oom || (b->oom = dyn__buf_reserve(&b->buf, n + 1) != DYN_OK)) return;
  if (n) memcpy(b->buf.data + b->buf.len, s, n);
  b->buf.len += n;
  b->buf.data[b->buf.len] = '\0';
}

static void puts_(sbuf_t *b, const char *s) { put(b, s, strlen(s)); }

/* Jinja's |trim: strips leading and trailing white space. */
static void put_trimmed(sbuf_t *b, const char *s, size_t n) {
  while (n && strchr(" \t\n\r\v\f", s[0])) s++, n--;
  while (n && strchr(" \t\n\r\v\f", s[n - 1])) n--;
  put(b, s, n);
}

static int errf(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return DYN_EINVAL;
}

static bool is(const dyn_chat_msg_t *m, const char *role) { return strcmp(m->role, role) == 0; }

static void render_llama3(sbuf_t *b, const dyn_chat_msg_t *m, size_t n, bool gen) {
  puts_(b, "<|begin_of_text|>");
  for (size_t i = 0; i < n; i++) {
    puts_(b, "<|start_header_id|>");
    puts_(b, m[i].role);
    puts_(b, "<|end_header_id|>\n\n");
    put_trimmed(b, m[i].content, m[i].content_len);
    puts_(b, "<|eot_id|>");
  }
  if (gen) puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void render_chatml(sbuf_t *b, const dyn_chat_msg_t *m, size_t n, bool gen) {
  for (size_t i = 0; i < n; i++) {
    puts_(b, "<|im_start|>");
    puts_(b, m[i].role);
    puts_(b, "\n");
    put(b, m[i].content, m[i].content_len);
    puts_(b, "<|im_end|>\n");
  }
  if (gen) puts_(b, "<|im_start|>assistant\n");
}

/* The system message (if first) for families that fold it into the first
 * user turn; returns the index of the first other message. */
static size_t leading_system(const dyn_chat_msg_t *m, size_t n, const dyn_chat_msg_t **sys) {
  *sys = n && is(&m[0], "system") ? &m[0] : NULL;
  return *sys ? 1 : 0;
}

static void render_mistral(sbuf_t *b, const dyn_chat_msg_t *m, size_t n) {
  const dyn_chat_msg_t *sys;
  size_t i = leading_system(m, n, &sys);
  puts_(b, "<s>");
  for (bool first = true; i < n; i++) {
    if (is(&m[i], "user")) {
      puts_(b, "[INST] ");
      if (first && sys) {
        put(b, sys->content, sys->content_len);
        puts_(b, "\n\n");
      }
      put(b, m[i].content, m[i].content_len);
      puts_(b, " [/INST]");
      first = false;
    } else { /* assistant */
      put(b, m[i].content, m[i].content_len);
      puts_(b, "</s>");
    }
  }
}

static void render_gemma(sbuf_t *b, const dyn_chat_msg_t *m, size_t n, bool gen) {
  const dyn_chat_msg_t *sys;
  size_t i = leading_system(m, n, &sys);
  puts_(b, "<bos>");
  for (bool first = true; i < n; i++, first = false) {
    puts_(b, is(&m[i], "assistant") ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
    if (first && sys) {
      put_trimmed(b, sys->content, sys->content_len);
      puts_(b, "\n\n");
    }
    put_trimmed(b, m[i].content, m[i].content_len);
    puts_(b, "<end_of_turn>\n");
  }
  if (gen) puts_(b, "<start_of_turn>model\n");
}

static void render_phi3(sbuf_t *b, const dyn_chat_msg_t *m, size_t n, bool gen) {
  for (size_t i = 0; i < n; i++) {
    puts_(b, "<|");
    puts_(b, m[i].role);
    puts_(b, "|>\n");
    put(b, m[i].content, m[i].content_len);
    puts_(b, "<|end|>\n");
  }
  puts_(b, gen ? "<|assistant|>\n" : "<|endoftext|>");
}

static void render_plain(sbuf_t *b, const dyn_chat_msg_t *m, size_t n, bool gen) {
  for (size_t i = 0; i < n; i++) {
    puts_(b, m[i].role);
    puts_(b, ": ");
    put(b, m[i].content, m[i].content_len);
    puts_(b, "\n");
  }
  if (gen) puts_(b, "assistant: ");
}

/* Roles each family can express. */
static int check_roles(dyn_chat_family_t f, const dyn_chat_msg_t *m, size_t n, char *err,
                       size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    if (!m[i].role || !m[i].role[0]) return errf(err, errlen, "messages[%zu]: 'role' is missing", i);
    if (!m[i].content && m[i].content_len)
      return errf(err, errlen, "messages[%zu]: content is NULL with a length", i);
    if (f == DYN_CHAT_LLAMA3 || f == DYN_CHAT_CHATML || f == DYN_CHAT_PLAIN) continue;
    bool sys = is(&m[i], "system"), ok = is(&m[i], "user") || is(&m[i], "assistant") || sys;
    if (!ok)
      return errf(err, errlen, "messages[%zu]: role '%s' is not supported by the %s template", i,
                  m[i].role, dyn_chat_family_name(f));
    if (sys && i > 0 && f != DYN_CHAT_PHI3)
      return errf(err, errlen, "messages[%zu]: the %s template takes a system message only first", i,
                  dyn_chat_family_name(f));
  }
  return DYN_OK;
}

/* The conversation with the template's default system prompt in front,
 * when it has one and the conversation does not start with a system
 * message: a new array in *with (the caller frees it; NULL if none was
 * needed) that *msgs then points to. */
static int with_default_system(const dyn_chat_template_t *t, const dyn_chat_msg_t **msgs,
                               size_t *n, dyn_chat_msg_t **with) {
  *with = NULL;
  if (!t->default_system || *n == 0 || is(&(*msgs)[0], "system")) return DYN_OK;
  if (!(*with = malloc((*n + 1) * sizeof **with))) return DYN_ENOMEM;
  (*with)[0] = (dyn_chat_msg_t){"system", t->default_system, strlen(t->default_system)};
  memcpy(*with + 1, *msgs, *n * sizeof **msgs);
  (*n)++;
  *msgs = *with;
  return DYN_OK;
}

int dyn_chat_render(dyn_chat_family_t f, const dyn_chat_msg_t *msgs, size_t n,
                    bool add_generation_prompt, char **out, size_t *out_len, char *err,
                    size_t errlen) {
  const dyn_chat_template_t t = {f, NULL};
  return dyn_chat_template_render(&t, msgs, n, add_generation_prompt, out, out_len, err, errlen);
}

int dyn_chat_template_render(const dyn_chat_template_t *t, const dyn_chat_msg_t *msgs, size_t n,
                             bool add_generation_prompt, char **out, size_t *out_len, char *err,
                             size_t errlen) {
  if (!t || !out || (!msgs && n)) return errf(err, errlen, "no template, no output or no messages");
  dyn_chat_family_t f = t->family;
  if ((size_t)f >= N_FAMILIES) return errf(err, errlen, "unknown chat family %d", (int)f);
  *out = NULL;
  int rc = check_roles(f, msgs, n, err, errlen);
  if (rc) return rc;
  dyn_chat_msg_t *with;
  if ((rc = with_default_system(t, &msgs, &n, &with))) return rc;
  sbuf_t b = {0};
  put(&b, "", 0); /* an empty conversation is still a string */
  switch (f) {
  case DYN_CHAT_LLAMA3: render_llama3(&b, msgs, n, add_generation_prompt); break;
  case DYN_CHAT_CHATML: render_chatml(&b, msgs, n, add_generation_prompt); break;
  case DYN_CHAT_MISTRAL: render_mistral(&b, msgs, n); break;
  case DYN_CHAT_GEMMA: render_gemma(&b, msgs, n, add_generation_prompt); break;
  case DYN_CHAT_PHI3: render_phi3(&b, msgs, n, add_generation_prompt); break;
  default: render_plain(&b, msgs, n, add_generation_prompt); break;
  }
  free(with);
  if (b.oom) {
    dyn__buf_free(&b.buf);
    return DYN_ENOMEM;
  }
  *out = (char *)b.buf.data;
  if (out_len) *out_len = b.buf.len;
  return DYN_OK;
}

/* ---- from OpenAI JSON ----------------------------------------------------- */

/* A message's content as one string: a string, null, or text parts joined
 * into *joined (which the caller frees). */
static int content_of(json_t *msg, size_t i, const char **s, size_t *n, sbuf_t *joined, char *err,
                      size_t errlen) {
  json_t *c = json_object_get(msg, "content");
  if (!c || json_is_null(c)) {
    *s = "", *n = 0;
    return DYN_OK;
  }
  if (json_is_string(c)) {
    *s = json_string_value(c), *n = json_string_length(c);
    return DYN_OK;
  }
  if (!json_is_array(c))
    return errf(err, errlen, "messages[%zu].content must be a string, null or an array of parts", i);
  size_t k;
  json_t *part;
  put(joined, "", 0);
  json_array_foreach(c, k, part) {
    const char *type = json_string_value(json_object_get(part, "type"));
    json_t *text = json_object_get(part, "text");
    if (!type || strcmp(type, "text") != 0)
      return errf(err, errlen, "messages[%zu].content[%zu]: part type '%s' is not supported (text only)",
                  i, k, type ? type : "(none)");
    if (!json_is_string(text))
      return errf(err, errlen, "messages[%zu].content[%zu].text must be a string", i, k);
    put(joined, json_string_value(text), json_string_length(text));
  }
  if (joined->oom) return DYN_ENOMEM;
  *s = (const char *)joined->buf.data, *n = joined->buf.len;
  return DYN_OK;
}

int dyn_chat_render_json(dyn_chat_family_t f, const struct json_t *messages,
                         bool add_generation_prompt, char **out, size_t *out_len, char *err,
                         size_t errlen) {
  const dyn_chat_template_t t = {f, NULL};
  return dyn_chat_template_render_json(&t, messages, add_generation_prompt, out, out_len, err,
                                       errlen);
}

int dyn_chat_template_render_json(const dyn_chat_template_t *t, const struct json_t *messages,
                                  bool add_generation_prompt, char **out, size_t *out_len,
                                  char *err, size_t errlen) {
  json_t *arr = (json_t *)messages;
  if (!json_is_array(arr)) return errf(err, errlen, "'messages' must be an array");
  size_t n = json_array_size(arr), i;
  dyn_chat_msg_t *m = calloc(n ? n : 1, sizeof *m);
  sbuf_t *joined = calloc(n ? n : 1, sizeof *joined);
  int rc = m && joined ? DYN_OK : DYN_ENOMEM;
  json_t *msg;
  json_array_foreach(arr, i, msg) {
    if (rc) break;
    if (!json_is_object(msg)) {
      rc = errf(err, errlen, "messages[%zu] must be an object", i);
      break;
    }
    m[i].role = json_string_value(json_object_get(msg, "role"));
    if (!m[i].role) {
      rc = errf(err, errlen, "messages[%zu].role must be a string", i);
      break;
    }
    rc = content_of(msg, i, &m[i].content, &m[i].content_len, &joined[i], err, errlen);
  }
  if (!rc) rc = dyn_chat_template_render(t, m, n, add_generation_prompt, out, out_len, err, errlen);
  for (size_t k = 0; joined && k < n; k++) dyn__buf_free(&joined[k].buf);
  free(joined);
  free(m);
  return rc;
}
