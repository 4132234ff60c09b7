/* fake_processor.c - a stand-in Processor (and Worker) for Frontend tests.
 *
 * Speaks the Frontend -> Processor protocol (protocol.h, through its
 * encoders and decoders) with deterministic
 * output, so test_frontend.py can check the OpenAI side exactly:
 *  - echoes the prompt (the last user message, or the completion prompt)
 *    word by word, one "token" per word; max_tokens (or
 *    max_completion_tokens) cuts it with finish_reason "length";
 *  - prompts starting with a magic word change behaviour:
 *      FAIL400   fails with a 400 "prompt has 5000 tokens, ..." (client's fault)
 *      FAIL500   fails with a plain message, not a protocol error (a 500)
 *      MIDFAIL   sends one delta, then fails
 *      SLOW      one word every 100 ms, so a client can hang up mid-stream
 *      ECHOREQ   sends the whole request it received as the text
 *  - every cancelled request appends its request_id and a newline to the
 *    file named by $FAKE_CANCEL_FILE, so a test sees the cancel arrive.
 * "Worker" only exists so that the Frontend's /health sees a live worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dynamo/service.h"
#include "llm/services/protocol.h"

typedef struct gen {
  dyn_request_t *req;
  uv_timer_t timer;
  char *words; /* the prompt, split in place */
  char *next;  /* strtok_r state */
  char *save;
  long max, sent, prompt_words;
  char request_id[64];
} gen_t;

static void send_delta(dyn_request_t *req, const char *text, int n_tokens) {
  dyn__proto_delta_t d = {.text = text, .text_len = strlen(text), .n_tokens = n_tokens};
  dyn__proto_send(req, dyn__proto_delta_encode(&d));
}

static void send_final(gen_t *g, const char *text, int n_tokens, const char *finish) {
  dyn__proto_delta_t d = {.text = text, .text_len = strlen(text), .n_tokens = n_tokens,
                          .finish_reason = finish, .prompt_tokens = g->prompt_words,
                          .completion_tokens = g->sent, .cached_tokens = 1};
  dyn__proto_send(g->req, dyn__proto_delta_encode(&d));
}

/* The text to echo: the completion prompt, or the last user message. */
static const char *prompt_of(const dyn__proto_gen_request_t *m) {
  if (m->kind == DYN__OAI_COMPLETION) return m->prompt;
  for (size_t i = json_array_size(m->messages); i-- > 0;) {
    const json_t *msg = json_array_get(m->messages, i);
    if (strcmp(json_string_value(json_object_get(msg, "role")), "user")) continue;
    const json_t *c = json_object_get(msg, "content");
    if (json_is_string(c)) return json_string_value(c);
    return json_string_value(json_object_get(json_array_get(c, 0), "text"));
  }
  return NULL;
}

static long count_words(const char *s) {
  long n = 0;
  for (int in = 0; *s; s++) {
    if (*s == ' ') in = 0;
    else if (!in) in = 1, n++;
  }
  return n;
}

static void gen_closed(uv_handle_t *h) {
  gen_t *g = h->data;
  free(g->words);
  free(g);
}

static void gen_stop(gen_t *g) {
  uv_timer_stop(&g->timer);
  uv_close((uv_handle_t *)&g->timer, gen_closed);
}

/* Emits the next word; at the end (or at max) the finishing message. */
static int step(gen_t *g) {
  char *w = strtok_r(g->next, " ", &g->save);
  g->next = NULL;
  if (w && g->sent >= g->max) {
    send_final(g, "", 0, "length"); /* an empty finishing delta */
    return 0;
  }
  if (!w) {
    send_final(g, "", 0, "stop");
    return 0;
  }
  char buf[512];
  snprintf(buf, sizeof buf, "%s%s", g->sent ? " " : "", w);
  g->sent++;
  /* Peek: the last word carries the finish_reason itself. */
  char *save = g->save;
  int last = !save || !*save || strspn(save, " ") == strlen(save);
  if (last) {
    send_final(g, buf, 1, "stop");
    return 0;
  }
  send_delta(g->req, buf, 1);
  return 1;
}

static void on_tick(uv_timer_t *t) {
  gen_t *g = t->data;
  if (step(g)) return;
  dyn_request_end(g->req);
  gen_stop(g);
}

static void on_cancel(dyn_request_t *req, void *ud) {
  gen_t *g = ud;
  const char *path = getenv("FAKE_CANCEL_FILE");
  FILE *f = path ? fopen(path, "a") : NULL;
  if (f) {
    fprintf(f, "%s\n", g->request_id);
    fclose(f);
  }
  dyn_request_end(req);
  gen_stop(g);
}

static int magic(dyn_request_t *req, const char *prompt, const void *body, size_t len) {
  if (!strncmp(prompt, "FAIL400", 7)) {
    dyn__proto_fail(req, 400, "prompt has 5000 tokens, the model's context is 4096");
  } else if (!strncmp(prompt, "FAIL500", 7)) {
    dyn_request_fail(req, "engine exploded");
  } else if (!strncmp(prompt, "MIDFAIL", 7)) {
    send_delta(req, "partial", 1);
    dyn_request_fail(req, "engine died mid-stream");
  } else if (!strncmp(prompt, "ECHOREQ", 7)) {
    dyn__proto_delta_t d = {.text = (const char *)body, .text_len = len, .n_tokens = 1, .finish_reason = "stop",
                            .prompt_tokens = 1, .completion_tokens = 1, .cached_tokens = 0};
    dyn__proto_send(req, dyn__proto_delta_encode(&d));
    dyn_request_end(req);
  } else {
    return 0;
  }
  return 1;
}

static void processor_generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  dyn__proto_gen_request_t m;
  const char *why;
  const char *prompt = dyn__proto_gen_request_decode(body, len, &m, &why) ? NULL : prompt_of(&m);
  if (!prompt) {
    dyn__proto_gen_request_free(&m);
    dyn_request_fail(req, "fake processor: no prompt in the request");
    return;
  }
  if (magic(req, prompt, body, len)) {
    dyn__proto_gen_request_free(&m);
    return;
  }
  gen_t *g = calloc(1, sizeof *g);
  g->req = req;
  g->words = strdup(prompt);
  g->next = g->words;
  g->max = m.has_max_tokens && m.max_tokens > 0 ? (long)m.max_tokens : 1000000;
  g->prompt_words = count_words(prompt);
  snprintf(g->request_id, sizeof g->request_id, "%s", m.request_id ? m.request_id : "");
  int slow = !strncmp(prompt, "SLOW", 4);
  dyn__proto_gen_request_free(&m);
  uv_timer_init(dyn_runtime_loop(dyn_service_runtime(ud)), &g->timer);
  g->timer.data = g;
  dyn_request_on_cancel(req, on_cancel, g);
  /* Fast mode still yields to the loop between words (a timer of 0), so
   * the deltas arrive as separate messages, as an engine's do. */
  uv_timer_start(&g->timer, on_tick, 0, slow ? 100 : 1);
}

static void worker_generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  (void)body, (void)len, (void)ud;
  dyn_request_fail(req, "fake Worker: it only exists to be live");
}

static const dyn_endpoint_def_t processor_endpoints[] = {{"generate", processor_generate}, {0}};
static const dyn_endpoint_def_t worker_endpoints[] = {{"generate", worker_generate}, {0}};

static const dyn_service_def_t processor = {
    .name = "Processor", .namespace_ = "dynamo", .workers = 1, .endpoints = processor_endpoints};
static const dyn_service_def_t worker = {
    .name = "Worker", .namespace_ = "dynamo", .workers = 1, .endpoints = worker_endpoints};

const dyn_service_def_t *const dyn_services[] = {&processor, &worker, NULL};
