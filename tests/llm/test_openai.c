/* test_openai.c - the OpenAI wire format of the Frontend (src/llm/services/openai.c):
 * request validation (what passes, what fails and which field the 400
 * names), error objects (the upstream error mapping is protocol.c's, in
 * test_protocol.c), and that every chunk and
 * response is valid JSON of the shape OpenAI clients parse. */
#include "harness.h"
#include "llm/services/openai.h"

#include <jansson.h>

typedef struct vcase {
  const char *body;
  int ok;
  const char *param; /* the field a 400 names */
} vcase_t;

static void run_cases(dyn__oai_kind_t kind, const vcase_t *cases, size_t n) {
  for (size_t i = 0; i < n; i++) {
    json_error_t jerr;
    json_t *req = json_loads(cases[i].body, JSON_DECODE_ANY, &jerr);
    REQUIRE(req);
    dyn__oai_info_t info;
    dyn__oai_error_t err = {0};
    int rc = dyn__oai_validate(req, kind, &info, &err);
    CHECK_MSG((rc == DYN_OK) == cases[i].ok, "%s -> %d %s", cases[i].body, rc,
              rc ? err.message : "");
    if (!cases[i].ok && rc) {
      CHECK_EQ_INT(err.status, 400);
      CHECK_MSG(cases[i].param ? err.param && !strcmp(err.param, cases[i].param) : !err.param,
                "%s: param %s, expected %s", cases[i].body, err.param ? err.param : "(null)",
                cases[i].param ? cases[i].param : "(null)");
      /* The message names the field it is about. */
      if (cases[i].param) CHECK_MSG(strstr(err.message, cases[i].param), "%s", err.message);
    }
    json_decref(req);
  }
}

static void test_chat_validation(void) {
  static const vcase_t cases[] = {
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
       "\"logprobs\":true,\"top_logprobs\":20}", 1, NULL},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
       "\"logprobs\":1}", 0, "logprobs"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
       "\"logprobs\":true,\"top_logprobs\":21}", 0, "top_logprobs"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
       "\"top_logprobs\":2}", 0, "top_logprobs"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
       "\"logprobs\":true,\"top_logprobs\":\"3\"}", 0, "top_logprobs"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 1, NULL},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]},"
       "{\"role\":\"assistant\",\"content\":null},{\"role\":\"developer\",\"content\":\"d\"},"
       "{\"role\":\"tool\",\"content\":\"t\"}],"
       "\"max_tokens\":5,\"temperature\":0,\"top_p\":1,\"n\":1,\"stream\":true,"
       "\"stream_options\":{\"include_usage\":true},\"stop\":[\"x\"],\"whatever\":{\"a\":1},"
       "\"seed\":null}", 1, NULL},
      {"[1,2]", 0, NULL},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, "model"},
      {"{\"model\":7,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, "model"},
      {"{\"model\":\"m\"}", 0, "messages"},
      {"{\"model\":\"m\",\"messages\":[]}", 0, "messages"},
      {"{\"model\":\"m\",\"messages\":\"hi\"}", 0, "messages"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}", 0, "messages"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", 0, "messages"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 0, "messages"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
       0, "messages"},
      {"{\"model\":\"m\",\"messages\":[1]}", 0, "messages"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":0}", 0,
       "max_tokens"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":\"5\"}",
       0, "max_tokens"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
       "\"max_completion_tokens\":-1}", 0, "max_completion_tokens"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":2.5}",
       0, "temperature"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":\"hot\"}",
       0, "temperature"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"top_p\":0}", 0,
       "top_p"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2}", 0, "n"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":\"yes\"}", 0,
       "stream"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
       "\"stream_options\":{\"include_usage\":1}}", 0, "stream_options"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[1]}", 0,
       "stop"},
  };
  run_cases(DYN__OAI_CHAT, cases, sizeof cases / sizeof *cases);
}

static void test_completion_validation(void) {
  static const vcase_t cases[] = {
      {"{\"model\":\"m\",\"prompt\":\"once upon\"}", 1, NULL},
      {"{\"model\":\"m\",\"prompt\":[\"once upon\"],\"stop\":\"x\",\"echo\":false}", 1, NULL},
      {"{\"model\":\"m\"}", 0, "prompt"},
      {"{\"model\":\"m\",\"prompt\":[1,2,3]}", 0, "prompt"},
      {"{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", 0, "prompt"},
      {"{\"model\":\"m\",\"prompt\":{}}", 0, "prompt"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"n\":3}", 0, "n"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":5}", 1, NULL},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":null}", 1, NULL},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":6}", 0, "logprobs"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":true}", 0, "logprobs"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":40,\"top_p\":0.5}", 1, NULL},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":-1}", 1, NULL},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":-2}", 0, "top_k"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":\"5\"}", 0, "top_k"},
  };
  run_cases(DYN__OAI_COMPLETION, cases, sizeof cases / sizeof *cases);
  /* The info a valid request yields. */
  json_t *req = json_loads("{\"model\":\"mm\",\"prompt\":\"p\",\"stream\":true,"
                           "\"stream_options\":{\"include_usage\":true}}", 0, NULL);
  dyn__oai_info_t info;
  dyn__oai_error_t err;
  CHECK_STATUS(dyn__oai_validate(req, DYN__OAI_COMPLETION, &info, &err), DYN_OK);
  CHECK_EQ_STR(info.model, "mm");
  CHECK_EQ_INT(info.stream, 1);
  CHECK_EQ_INT(info.include_usage, 1);
  json_decref(req);
}

static void test_errors(void) {
  char *e = dyn__oai_error_json(404, "The model `x` does not exist.", "model");
  json_t *v = json_loads(e, 0, NULL);
  REQUIRE(v);
  json_t *err = json_object_get(v, "error");
  CHECK_EQ_STR(json_string_value(json_object_get(err, "message")), "The model `x` does not exist.");
  CHECK_EQ_STR(json_string_value(json_object_get(err, "type")), "NotFoundError");
  CHECK_EQ_STR(json_string_value(json_object_get(err, "param")), "model");
  CHECK_EQ_INT(json_integer_value(json_object_get(err, "code")), 404);
  json_decref(v);
  free(e);
  e = dyn__oai_error_json(503, "down", NULL);
  v = json_loads(e, 0, NULL);
  CHECK(json_is_null(json_object_get(json_object_get(v, "error"), "param")));
  json_decref(v);
  free(e);

  e = dyn__oai_error_json(503, "down", NULL);
  CHECK(e && strstr(e, "\"type\":\"ServiceUnavailableError\""));
  free(e);
}

/* Splits "data: {json}\n\n" events, checks the framing, returns them. */
static json_t *events(const dyn__buf_t *b) {
  json_t *out = json_array();
  const char *p = (const char *)b->data, *end = p + b->len;
  while (p < end) {
    CHECK(!strncmp(p, "data: ", 6));
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    REQUIRE(nl && nl + 1 < end && nl[1] == '\n');
    json_t *v = json_loadb(p + 6, (size_t)(nl - p - 6), 0, NULL);
    CHECK(v);
    json_array_append_new(out, v ? v : json_null());
    p = nl + 2;
  }
  return out;
}

static void test_chat_chunks(void) {
  dyn__oai_stream_t st;
  REQUIRE(!dyn__oai_stream_init(&st, DYN__OAI_CHAT, "chatcmpl-1", 1700000000, "m\"q", 1));
  dyn__buf_t b;
  dyn__buf_init(&b);
  CHECK_STATUS(dyn__oai_chunk_role(&st, &b), DYN_OK);
  CHECK_STATUS(dyn__oai_chunk_delta(&st, "he\"llo", 6, NULL, NULL, 0, 0, &b), DYN_OK);
  CHECK_STATUS(dyn__oai_chunk_delta(&st, "", 0, "length", NULL, 0, 0, &b), DYN_OK);
  CHECK_STATUS(dyn__oai_chunk_usage(&st, 7, 2, 3, &b), DYN_OK);
  json_t *ev = events(&b);
  REQUIRE(json_array_size(ev) == 4);
  for (size_t i = 0; i < 4; i++) {
    json_t *c = json_array_get(ev, i);
    CHECK_EQ_STR(json_string_value(json_object_get(c, "id")), "chatcmpl-1");
    CHECK_EQ_STR(json_string_value(json_object_get(c, "object")), "chat.completion.chunk");
    CHECK_EQ_STR(json_string_value(json_object_get(c, "model")), "m\"q");
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "created")), 1700000000);
    if (i < 3) CHECK(json_is_null(json_object_get(c, "usage")));
  }
  json_t *d0 = json_object_get(json_array_get(json_object_get(json_array_get(ev, 0), "choices"), 0), "delta");
  CHECK_EQ_STR(json_string_value(json_object_get(d0, "role")), "assistant");
  CHECK_EQ_STR(json_string_value(json_object_get(d0, "content")), "");
  json_t *c1 = json_array_get(json_object_get(json_array_get(ev, 1), "choices"), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(c1, "delta"), "content")), "he\"llo");
  CHECK(json_is_null(json_object_get(c1, "finish_reason")));
  json_t *c2 = json_array_get(json_object_get(json_array_get(ev, 2), "choices"), 0);
  CHECK_EQ_INT((int)json_object_size(json_object_get(c2, "delta")), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(c2, "finish_reason")), "length");
  json_t *last = json_array_get(ev, 3);
  CHECK_EQ_INT((int)json_array_size(json_object_get(last, "choices")), 0);
  json_t *u = json_object_get(last, "usage");
  CHECK_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), 7);
  CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 2);
  CHECK_EQ_INT(json_integer_value(json_object_get(u, "total_tokens")), 9);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"),
                                                  "cached_tokens")), 3);
  json_decref(ev);
  dyn__buf_free(&b);
  dyn__oai_stream_free(&st);
}

static void test_completion_chunks(void) {
  dyn__oai_stream_t st;
  REQUIRE(!dyn__oai_stream_init(&st, DYN__OAI_COMPLETION, "cmpl-9", 5, "m", 0));
  dyn__buf_t b;
  dyn__buf_init(&b);
  CHECK_STATUS(dyn__oai_chunk_delta(&st, "a\nb", 3, NULL, NULL, 0, 0, &b), DYN_OK);
  CHECK_STATUS(dyn__oai_chunk_delta(&st, " c", 2, "stop", NULL, 0, 0, &b), DYN_OK);
  json_t *ev = events(&b);
  REQUIRE(json_array_size(ev) == 2);
  json_t *c0 = json_array_get(ev, 0);
  CHECK_EQ_STR(json_string_value(json_object_get(c0, "object")), "text_completion");
  CHECK(!json_object_get(c0, "usage")); /* no include_usage: no usage key */
  json_t *ch0 = json_array_get(json_object_get(c0, "choices"), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(ch0, "text")), "a\nb");
  CHECK_EQ_INT(json_integer_value(json_object_get(ch0, "index")), 0);
  CHECK(json_is_null(json_object_get(ch0, "logprobs")));
  json_t *ch1 = json_array_get(json_object_get(json_array_get(ev, 1), "choices"), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(ch1, "finish_reason")), "stop");
  json_decref(ev);
  dyn__buf_free(&b);
  dyn__oai_stream_free(&st);
}

static void test_responses(void) {
  char *r = dyn__oai_response(DYN__OAI_CHAT, "chatcmpl-2", 10, "m", "hi there", 8, "stop", NULL, 0, 4, 2, 1);
  json_t *v = json_loads(r, 0, NULL);
  REQUIRE(v);
  CHECK_EQ_STR(json_string_value(json_object_get(v, "object")), "chat.completion");
  json_t *c = json_array_get(json_object_get(v, "choices"), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(c, "message"), "role")), "assistant");
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(c, "message"), "content")),
               "hi there");
  CHECK_EQ_STR(json_string_value(json_object_get(c, "finish_reason")), "stop");
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(v, "usage"), "total_tokens")), 6);
  json_decref(v);
  free(r);
  r = dyn__oai_response(DYN__OAI_COMPLETION, "cmpl-2", 10, "m", "", 0, "length", NULL, 0, 1, 0, 0);
  v = json_loads(r, 0, NULL);
  REQUIRE(v);
  CHECK_EQ_STR(json_string_value(json_object_get(v, "object")), "text_completion");
  c = json_array_get(json_object_get(v, "choices"), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(c, "text")), "");
  CHECK_EQ_STR(json_string_value(json_object_get(c, "finish_reason")), "length");
  json_decref(v);
  free(r);
}

/* Log-probabilities in OpenAI's two shapes: chat's content entries with
 * token, logprob, bytes and top_logprobs; completions' parallel arrays
 * with byte offsets. A token that is part of a UTF-8 character shows its
 * raw bytes and U+FFFD in its string. */
static void test_logprobs(void) {
  static const uint8_t he[] = "He", llo[] = "llo", bad[] = {0xC3};
  dyn__oai_logprob_t lp[2] = {0};
  lp[0].token = (dyn__oai_token_lp_t){he, 2, -0.25};
  lp[0].n_top = 2;
  lp[0].top[0] = lp[0].token;
  lp[0].top[1] = (dyn__oai_token_lp_t){bad, 1, -2.5};
  lp[1].token = (dyn__oai_token_lp_t){llo, 3, -0.5};
  dyn__oai_stream_t st;
  dyn__buf_t b;
  dyn__buf_init(&b);
  REQUIRE(dyn__oai_stream_init(&st, DYN__OAI_CHAT, "c1", 1, "m", 0) == DYN_OK);
  CHECK_STATUS(dyn__oai_chunk_delta(&st, "Hello", 5, NULL, lp, 2, 0, &b), DYN_OK);
  REQUIRE(b.len > 8 && !memcmp(b.data, "data: ", 6));
  json_t *v = json_loadb((const char *)b.data + 6, b.len - 6, JSON_DISABLE_EOF_CHECK, NULL);
  REQUIRE(v);
  json_t *content = json_object_get(
      json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs"), "content");
  CHECK_EQ_INT(json_array_size(content), 2);
  json_t *e0 = json_array_get(content, 0);
  CHECK_EQ_STR(json_string_value(json_object_get(e0, "token")), "He");
  CHECK(json_real_value(json_object_get(e0, "logprob")) == -0.25);
  CHECK_EQ_INT(json_array_size(json_object_get(e0, "bytes")), 2);
  CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(e0, "bytes"), 0)), 'H');
  json_t *top1 = json_array_get(json_object_get(e0, "top_logprobs"), 1);
  CHECK_EQ_STR(json_string_value(json_object_get(top1, "token")), "\xEF\xBF\xBD");
  CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(top1, "bytes"), 0)), 0xC3);
  CHECK_EQ_INT(json_array_size(json_object_get(json_array_get(content, 1), "top_logprobs")), 0);
  json_decref(v);
  dyn__oai_stream_free(&st);

  /* Completions: offsets continue from where the stream was. */
  b.len = 0;
  REQUIRE(dyn__oai_stream_init(&st, DYN__OAI_COMPLETION, "c2", 1, "m", 0) == DYN_OK);
  CHECK_STATUS(dyn__oai_chunk_delta(&st, "Hello", 5, NULL, lp, 2, 10, &b), DYN_OK);
  v = json_loadb((const char *)b.data + 6, b.len - 6, JSON_DISABLE_EOF_CHECK, NULL);
  REQUIRE(v);
  json_t *l = json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs");
  CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(l, "tokens"), 1)), "llo");
  CHECK(json_real_value(json_array_get(json_object_get(l, "token_logprobs"), 1)) == -0.5);
  CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(l, "text_offset"), 0)), 10);
  CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(l, "text_offset"), 1)), 12);
  json_t *t0 = json_array_get(json_object_get(l, "top_logprobs"), 0);
  CHECK(json_real_value(json_object_get(t0, "He")) == -0.25);
  CHECK_EQ_INT(json_object_size(t0), 2);
  json_decref(v);
  dyn__oai_stream_free(&st);
  dyn__buf_free(&b);

  /* Whole responses: logprobs beside the message; null without them. */
  char *r = dyn__oai_response(DYN__OAI_CHAT, "c3", 1, "m", "Hello", 5, "stop", lp, 2, 1, 2, 0);
  v = json_loads(r, 0, NULL);
  REQUIRE(v);
  l = json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs");
  CHECK_EQ_INT(json_array_size(json_object_get(l, "content")), 2);
  json_decref(v);
  free(r);
  r = dyn__oai_response(DYN__OAI_COMPLETION, "c4", 1, "m", "x", 1, "stop", NULL, 0, 1, 1, 0);
  v = json_loads(r, 0, NULL);
  REQUIRE(v);
  CHECK(json_is_null(json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs")));
  json_decref(v);
  free(r);
}

int main(void) {
  test_logprobs();
  test_chat_validation();
  test_completion_validation();
  test_errors();
  test_chat_chunks();
  test_completion_chunks();
  test_responses();
  TEST_END();
}
