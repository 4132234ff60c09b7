/* test_protocol.c - the messages between the LLM services
 * (src/llm/services/protocol.c): each one through its encoder and decoder,
 * the wire spellings Python services and tests rely on, what a decoder
 * refuses, and how a failure's HTTP status reaches the Frontend. */
#include "harness.h"
#include "llm/services/protocol.h"

#include <jansson.h>

static json_t *parse(const char *text) {
  json_t *v = text ? json_loads(text, 0, NULL) : NULL;
  REQUIRE(v);
  return v;
}

static void test_gen_request(void) {
  json_t *req = parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                      "\"max_tokens\":5,\"max_completion_tokens\":7,\"seed\":42,"
                      "\"temperature\":0.5,\"ignore_eos\":true,\"stop\":[\"a\",\"\",\"bc\"],"
                      "\"unknown\":{\"x\":1}}");
  dyn__proto_gen_request_t m = {.kind = DYN__OAI_CHAT, .request_id = "chatcmpl-1", .request = req};
  char *text = dyn__proto_gen_request_encode(&m);
  json_t *wire = parse(text);
  CHECK_EQ_STR(json_string_value(json_object_get(wire, "kind")), "chat");
  CHECK_EQ_STR(json_string_value(json_object_get(wire, "request_id")), "chatcmpl-1");
  CHECK(json_equal(json_object_get(wire, "request"), req)); /* unknown fields pass */
  json_decref(wire);

  dyn__proto_gen_request_t d;
  const char *why = NULL;
  CHECK_STATUS(dyn__proto_gen_request_decode(text, strlen(text), &d, &why), DYN_OK);
  CHECK_EQ_INT(d.kind, DYN__OAI_CHAT);
  CHECK_EQ_STR(d.request_id, "chatcmpl-1");
  CHECK(json_is_array(d.messages) && json_array_size(d.messages) == 1);
  CHECK(d.prompt == NULL);
  CHECK(d.has_max_tokens && d.max_tokens == 7); /* max_completion_tokens wins */
  CHECK(d.ignore_eos && d.has_seed && d.seed == 42);
  CHECK(d.has_temperature && d.temperature == 0.5);
  CHECK_EQ_INT(d.n_stop, 2); /* "" is no stop string */
  CHECK_EQ_STR(d.stop[0], "a");
  CHECK_EQ_STR(d.stop[1], "bc");
  dyn__proto_gen_request_free(&d);
  free(text);
  json_decref(req);

  const char *completion = "{\"kind\":\"completion\",\"request\":{\"prompt\":[\"once\"],\"stop\":\"x\"}}";
  CHECK_STATUS(dyn__proto_gen_request_decode(completion, strlen(completion), &d, &why), DYN_OK);
  CHECK_EQ_INT(d.kind, DYN__OAI_COMPLETION);
  CHECK_EQ_STR(d.prompt, "once");
  CHECK(!d.request_id && !d.has_max_tokens && !d.has_seed && !d.has_temperature);
  CHECK(d.n_stop == 1 && !strcmp(d.stop[0], "x"));
  dyn__proto_gen_request_free(&d);

  const char *bad[] = {"", "[]", "{\"kind\":\"chat\"}", "{\"kind\":\"edit\",\"request\":{}}",
                       "{\"kind\":\"chat\",\"request\":[]}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    why = NULL;
    CHECK_STATUS(dyn__proto_gen_request_decode(bad[i], strlen(bad[i]), &d, &why), DYN_EINVAL);
    CHECK(why && strstr(why, "kind"));
  }
}

static void test_delta(void) {
  dyn__proto_delta_t m = {.text = "h\xc3\xa9\"", .text_len = 4, .n_tokens = 2};
  char *text = dyn__proto_delta_encode(&m);
  json_t *wire = parse(text);
  CHECK(json_is_null(json_object_get(wire, "finish_reason")));
  CHECK(!json_object_get(wire, "usage"));
  json_decref(wire);
  dyn__proto_delta_t d;
  CHECK_STATUS(dyn__proto_delta_decode(text, strlen(text), &d), DYN_OK);
  CHECK(d.text_len == 4 && !memcmp(d.text, "h\xc3\xa9\"", 4));
  CHECK(d.n_tokens == 2 && !d.finish_reason);
  dyn__proto_delta_free(&d);
  free(text);

  m = (dyn__proto_delta_t){.finish_reason = "length", .prompt_tokens = 9, .completion_tokens = 3,
                           .cached_tokens = 4};
  text = dyn__proto_delta_encode(&m);
  wire = parse(text);
  json_t *u = json_object_get(wire, "usage");
  CHECK_EQ_STR(json_string_value(json_object_get(wire, "text")), "");
  CHECK_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), 9);
  CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 3);
  CHECK_EQ_INT(json_integer_value(json_object_get(u, "cached_tokens")), 4);
  json_decref(wire);
  CHECK_STATUS(dyn__proto_delta_decode(text, strlen(text), &d), DYN_OK);
  CHECK_EQ_STR(d.finish_reason, "length");
  CHECK(d.prompt_tokens == 9 && d.completion_tokens == 3 && d.cached_tokens == 4);
  dyn__proto_delta_free(&d);
  free(text);

  /* A Processor that leaves completion_tokens out: -1, the Frontend counts. */
  const char *py = "{\"finish_reason\":\"stop\",\"usage\":{\"prompt_tokens\":1}}";
  CHECK_STATUS(dyn__proto_delta_decode(py, strlen(py), &d), DYN_OK);
  CHECK(d.text_len == 0 && d.completion_tokens == -1 && d.prompt_tokens == 1);
  dyn__proto_delta_free(&d);
  const char *bad[] = {"nope", "[1]", "{\"text\":5}", "{\"finish_reason\":1}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK_STATUS(dyn__proto_delta_decode(bad[i], strlen(bad[i]), &d), DYN_EINVAL);
}

static void test_route(void) {
  const uint32_t ids[] = {0, 7, 4294967295u};
  dyn__proto_route_request_t m = {.token_ids = ids, .n_tokens = 3};
  char *text = dyn__proto_route_request_encode(&m);
  CHECK_EQ_STR(text, "{\"token_ids\":[0,7,4294967295]}");
  dyn__proto_route_request_t d;
  const char *why;
  CHECK_STATUS(dyn__proto_route_request_decode(text, strlen(text), &d, &why), DYN_OK);
  CHECK(d.n_tokens == 3 && d.token_ids[1] == 7 && d.token_ids[2] == 4294967295u);
  dyn__proto_route_request_free(&d);
  free(text);
  const char *bad = "{\"token_ids\":[1,-2]}";
  CHECK_STATUS(dyn__proto_route_request_decode(bad, strlen(bad), &d, &why), DYN_EINVAL);
  CHECK(strstr(why, "token_ids"));

  dyn__proto_route_answer_t a = {.worker_id = 0x0123456789abcdefull, .overlap_blocks = 12,
                                 .request_blocks = 13};
  text = dyn__proto_route_answer_encode(&a);
  json_t *wire = parse(text);
  CHECK_EQ_STR(json_string_value(json_object_get(wire, "worker_id")), "0123456789abcdef");
  CHECK_EQ_INT(json_integer_value(json_object_get(wire, "overlap_blocks")), 12);
  json_decref(wire);
  dyn__proto_route_answer_t b;
  CHECK_STATUS(dyn__proto_route_answer_decode(text, strlen(text), &b), DYN_OK);
  CHECK(b.worker_id == a.worker_id && b.overlap_blocks == 12 && b.request_blocks == 13);
  free(text);
  const char *no_id = "{\"overlap_blocks\":1}";
  CHECK_STATUS(dyn__proto_route_answer_decode(no_id, strlen(no_id), &b), DYN_EINVAL);
}

static void test_engine(void) {
  const uint32_t ids[] = {5, 6};
  dyn__proto_engine_request_t m = {.token_ids = ids, .n_tokens = 2, .max_tokens = 9,
                                   .ignore_eos = 1, .has_seed = 1, .seed = 77,
                                   .has_temperature = 1, .temperature = 0.7,
                                   .request_id = "cmpl-\"x\""};
  char *text = dyn__proto_engine_request_encode(&m);
  json_t *wire = parse(text);
  CHECK_EQ_INT(json_integer_value(json_object_get(wire, "max_tokens")), 9);
  CHECK(json_is_true(json_object_get(wire, "ignore_eos")));
  CHECK_EQ_STR(json_string_value(json_object_get(wire, "request_id")), "cmpl-\"x\"");
  json_decref(wire);
  dyn__proto_engine_request_t d;
  const char *why;
  CHECK_STATUS(dyn__proto_engine_request_decode(text, strlen(text), &d, &why), DYN_OK);
  CHECK(d.n_tokens == 2 && d.token_ids[0] == 5 && d.max_tokens == 9 && d.ignore_eos);
  CHECK(d.has_seed && d.seed == 77 && d.has_temperature && d.temperature == 0.7);
  CHECK_EQ_STR(d.request_id, "cmpl-\"x\"");
  dyn__proto_engine_request_free(&d);
  free(text);

  /* Written by hand (a Python caller): the defaults, and an out-of-range
   * max_tokens as 0 for the engine to refuse with its reason. */
  const char *py = "{\"token_ids\":[1]}";
  CHECK_STATUS(dyn__proto_engine_request_decode(py, strlen(py), &d, &why), DYN_OK);
  CHECK(d.max_tokens == 16 && !d.ignore_eos && !d.has_seed && !d.has_temperature);
  CHECK(d.temperature == 1.0 && !d.request_id);
  dyn__proto_engine_request_free(&d);
  py = "{\"token_ids\":[1],\"max_tokens\":0}";
  CHECK_STATUS(dyn__proto_engine_request_decode(py, strlen(py), &d, &why), DYN_OK);
  CHECK_EQ_INT(d.max_tokens, 0);
  dyn__proto_engine_request_free(&d);
  py = "{\"max_tokens\":3}";
  CHECK_STATUS(dyn__proto_engine_request_decode(py, strlen(py), &d, &why), DYN_EINVAL);

  dyn__proto_engine_output_t o = {.token_ids = ids, .n_tokens = 2, .cached_tokens = 32};
  text = dyn__proto_engine_output_encode(&o);
  CHECK_EQ_STR(text, "{\"token_ids\":[5,6],\"cached_tokens\":32}");
  dyn__proto_engine_output_t od;
  CHECK_STATUS(dyn__proto_engine_output_decode(text, strlen(text), &od, &why), DYN_OK);
  CHECK(od.n_tokens == 2 && od.token_ids[1] == 6 && od.cached_tokens == 32);
  CHECK_EQ_INT(od.finish, DYN__PROTO_GOING);
  dyn__proto_engine_output_free(&od);
  free(text);
  o = (dyn__proto_engine_output_t){.cached_tokens = -1, .finish = DYN__PROTO_LENGTH};
  text = dyn__proto_engine_output_encode(&o);
  CHECK_EQ_STR(text, "{\"token_ids\":[],\"finish_reason\":\"length\"}");
  CHECK_STATUS(dyn__proto_engine_output_decode(text, strlen(text), &od, &why), DYN_OK);
  CHECK(od.n_tokens == 0 && od.cached_tokens == -1 && od.finish == DYN__PROTO_LENGTH);
  dyn__proto_engine_output_free(&od);
  free(text);
  const char *stop = "{\"token_ids\":[],\"finish_reason\":\"stop\"}";
  CHECK_STATUS(dyn__proto_engine_output_decode(stop, strlen(stop), &od, &why), DYN_OK);
  CHECK_EQ_INT(od.finish, DYN__PROTO_STOP);
  dyn__proto_engine_output_free(&od);
  CHECK_STATUS(dyn__proto_engine_output_decode("{}", 2, &od, &why), DYN_EINVAL);
}

static void test_load(void) {
  dyn__proto_load_t m = {.worker_id = 0xabcull, .active_slots = 1, .total_slots = 64,
                         .waiting = 3, .kv_blocks_used = 10, .kv_blocks_cached = 20,
                         .kv_blocks_total = 1024, .requests = 5, .prompt_tokens = 100,
                         .cached_prompt_tokens = 50, .generated_tokens = 7};
  char *text = dyn__proto_load_encode(&m);
  json_t *wire = parse(text);
  CHECK_EQ_STR(json_string_value(json_object_get(wire, "worker_id")), "0000000000000abc");
  CHECK_EQ_INT(json_integer_value(json_object_get(wire, "kv_blocks_total")), 1024);
  json_decref(wire);
  dyn__proto_load_t d;
  CHECK_STATUS(dyn__proto_load_decode(text, strlen(text), &d), DYN_OK);
  CHECK(!memcmp(&d, &m, sizeof d));
  free(text);
  const char *neg = "{\"worker_id\":\"1\",\"waiting\":-4}";
  CHECK_STATUS(dyn__proto_load_decode(neg, strlen(neg), &d), DYN_OK);
  CHECK(d.worker_id == 1 && d.waiting == 0);
  CHECK_STATUS(dyn__proto_load_decode("{}", 2, &d), DYN_EINVAL);
}

/* The status travels as a field; the runtime's own failures map to 503
 * (no live instance) or 500. */
static void test_errors(void) {
  dyn__proto_error_t e = {.status = 400};
  snprintf(e.message, sizeof e.message, "prompt too long");
  char *text = dyn__proto_error_encode(&e);
  dyn__proto_error_t d;
  dyn__proto_error_decode(DYN_EREMOTE, text, &d);
  CHECK_EQ_INT(d.status, 400);
  CHECK_EQ_STR(d.message, "prompt too long");
  free(text);
  e.status = 429;
  text = dyn__proto_error_encode(&e);
  dyn__proto_error_decode(DYN_EREMOTE, text, &d);
  CHECK_EQ_INT(d.status, 429);
  free(text);
  e.status = 503;
  snprintf(e.message, sizeof e.message, "no engine worker is live");
  text = dyn__proto_error_encode(&e);
  dyn__proto_error_decode(DYN_EREMOTE, text, &d);
  CHECK_EQ_INT(d.status, 503);
  CHECK_EQ_STR(d.message, "no engine worker is live");
  free(text);

  /* Not ours: plain text, digits in front included, is a 500 as it reads. */
  dyn__proto_error_decode(DYN_EREMOTE, "engine exploded", &d);
  CHECK_EQ_INT(d.status, 500);
  CHECK_EQ_STR(d.message, "engine exploded");
  dyn__proto_error_decode(DYN_EREMOTE, "400 prompt too long", &d);
  CHECK_EQ_INT(d.status, 500);
  CHECK_EQ_STR(d.message, "400 prompt too long");
  /* A status outside 400..599 is no HTTP failure status. */
  dyn__proto_error_decode(DYN_EREMOTE, "{\"status\":600,\"message\":\"nonsense\"}", &d);
  CHECK_EQ_INT(d.status, 500);
  dyn__proto_error_decode(DYN_EREMOTE, "{\"status\":200,\"message\":\"fine\"}", &d);
  CHECK_EQ_INT(d.status, 500);
  dyn__proto_error_decode(DYN_ENOINSTANCE, "no live instance", &d);
  CHECK_EQ_INT(d.status, 503);
  CHECK_EQ_STR(d.message, "no live instance");
  dyn__proto_error_decode(DYN_EDISCONNECTED, NULL, &d);
  CHECK_EQ_INT(d.status, 500);
  CHECK_EQ_STR(d.message, dyn_strerror(DYN_EDISCONNECTED));
}

/* Logprobs through the three messages that carry them: asked for in the
 * OpenAI request (chat and completions spellings), the engine request,
 * the engine's per-token entries, and the deltas with token bytes. */
static void test_logprobs(void) {
  dyn__proto_gen_request_t g;
  const char *why = NULL;
  const char *chat = "{\"kind\":\"chat\",\"request\":{\"messages\":[],\"logprobs\":true,"
                     "\"top_logprobs\":3}}";
  CHECK_STATUS(dyn__proto_gen_request_decode(chat, strlen(chat), &g, &why), DYN_OK);
  CHECK(g.logprobs && g.top_logprobs == 3);
  CHECK(g.top_p == 0 && g.top_k == 0);
  dyn__proto_gen_request_free(&g);
  const char *sampling = "{\"kind\":\"chat\",\"request\":{\"messages\":[],\"top_p\":0.9,"
                         "\"top_k\":40}}";
  CHECK_STATUS(dyn__proto_gen_request_decode(sampling, strlen(sampling), &g, &why), DYN_OK);
  CHECK(g.top_p == 0.9 && g.top_k == 40);
  dyn__proto_gen_request_free(&g);
  const char *cmpl = "{\"kind\":\"completion\",\"request\":{\"prompt\":\"p\",\"logprobs\":2}}";
  CHECK_STATUS(dyn__proto_gen_request_decode(cmpl, strlen(cmpl), &g, &why), DYN_OK);
  CHECK(g.logprobs && g.top_logprobs == 2);
  dyn__proto_gen_request_free(&g);
  const char *none = "{\"kind\":\"chat\",\"request\":{\"messages\":[],\"top_logprobs\":3}}";
  CHECK_STATUS(dyn__proto_gen_request_decode(none, strlen(none), &g, &why), DYN_OK);
  CHECK(!g.logprobs);
  dyn__proto_gen_request_free(&g);

  uint32_t ids[2] = {5, 6};
  dyn__proto_engine_request_t er = {.token_ids = ids, .n_tokens = 2, .max_tokens = 4,
                                    .logprobs = 1, .top_logprobs = 2};
  char *text = dyn__proto_engine_request_encode(&er);
  dyn__proto_engine_request_t erd;
  CHECK_STATUS(dyn__proto_engine_request_decode(text, strlen(text), &erd, &why), DYN_OK);
  CHECK(erd.logprobs && erd.top_logprobs == 2);
  dyn__proto_engine_request_free(&erd);
  free(text);
  const char *too_many = "{\"token_ids\":[1],\"logprobs\":21}";
  CHECK_STATUS(dyn__proto_engine_request_decode(too_many, strlen(too_many), &erd, &why),
               DYN_EINVAL);

  dyn_engine_logprob_t lp[2] = {{-0.5f, 2, {5, 9}, {-0.5f, -1.75f}}, {-1.0f, 0, {0}, {0}}};
  dyn__proto_engine_output_t out = {.token_ids = ids, .n_tokens = 2, .cached_tokens = -1,
                                    .logprobs = lp};
  text = dyn__proto_engine_output_encode(&out);
  dyn__proto_engine_output_t outd;
  CHECK_STATUS(dyn__proto_engine_output_decode(text, strlen(text), &outd, &why), DYN_OK);
  REQUIRE(outd.logprobs);
  CHECK(outd.logprobs[0].logprob == -0.5f && outd.logprobs[0].n_top == 2);
  CHECK(outd.logprobs[0].top_ids[1] == 9 && outd.logprobs[0].top_logprobs[1] == -1.75f);
  CHECK(outd.logprobs[1].logprob == -1.0f && outd.logprobs[1].n_top == 0);
  dyn__proto_engine_output_free(&outd);
  free(text);
  const char *short_lp = "{\"token_ids\":[1,2],\"logprobs\":[{\"lp\":-1,\"top\":[]}]}";
  CHECK_STATUS(dyn__proto_engine_output_decode(short_lp, strlen(short_lp), &outd, &why),
               DYN_EINVAL);

  static const uint8_t tb[] = {0xE2, 0x82}, ab[] = "ab";
  dyn__oai_logprob_t dl = {{tb, 2, -0.125}, 1, {{ab, 2, -0.125}}};
  dyn__proto_delta_t d = {.text = "", .n_tokens = 1, .logprobs = &dl, .n_logprobs = 1};
  text = dyn__proto_delta_encode(&d);
  dyn__proto_delta_t dd;
  CHECK_STATUS(dyn__proto_delta_decode(text, strlen(text), &dd), DYN_OK);
  REQUIRE(dd.logprobs && dd.n_logprobs == 1);
  CHECK(dd.logprobs[0].token.len == 2 && !memcmp(dd.logprobs[0].token.bytes, tb, 2));
  CHECK(dd.logprobs[0].token.logprob == -0.125 && dd.logprobs[0].n_top == 1);
  CHECK(dd.logprobs[0].top[0].len == 2 && !memcmp(dd.logprobs[0].top[0].bytes, "ab", 2));
  dyn__proto_delta_free(&dd);
  free(text);
  const char *bad_bytes = "{\"text\":\"\",\"logprobs\":[{\"b\":[300],\"lp\":-1,\"top\":[]}]}";
  CHECK_STATUS(dyn__proto_delta_decode(bad_bytes, strlen(bad_bytes), &dd), DYN_EINVAL);
}

/* The decode worker's prefill request: the engine request plus the KV
 * layout, the blocks it holds, and whether it wants the KV at all. */
static void test_prefill_request(void) {
  const uint32_t ids[] = {5, 6, 7};
  dyn__proto_prefill_request_t m = {
      .req = {.token_ids = ids, .n_tokens = 3, .max_tokens = 1, .temperature = 1},
      .kv_layout = "engine=sim;block_size=16",
      .kv_from_block = 2,
      .no_kv = 1};
  char *text = dyn__proto_prefill_request_encode(&m);
  json_t *wire = parse(text);
  CHECK_EQ_STR(json_string_value(json_object_get(wire, "kv_layout")), "engine=sim;block_size=16");
  CHECK_EQ_INT(json_integer_value(json_object_get(wire, "kv_from_block")), 2);
  CHECK(json_is_true(json_object_get(wire, "no_kv")));
  json_decref(wire);
  dyn__proto_prefill_request_t d;
  const char *why = NULL;
  CHECK_STATUS(dyn__proto_prefill_request_decode(text, strlen(text), &d, &why), DYN_OK);
  CHECK(d.req.n_tokens == 3 && d.req.token_ids[2] == 7 && d.req.max_tokens == 1);
  CHECK_EQ_STR(d.kv_layout, "engine=sim;block_size=16");
  CHECK(d.kv_from_block == 2 && d.no_kv);
  dyn__proto_prefill_request_free(&d);
  free(text);

  /* Wanting the KV is the default, and is not spelled on the wire. */
  m.no_kv = 0;
  text = dyn__proto_prefill_request_encode(&m);
  CHECK(strstr(text, "no_kv") == NULL);
  CHECK_STATUS(dyn__proto_prefill_request_decode(text, strlen(text), &d, &why), DYN_OK);
  CHECK(!d.no_kv);
  dyn__proto_prefill_request_free(&d);
  free(text);

  const char *bad = "{\"token_ids\":[1],\"kv_layout\":\"x\",\"no_kv\":1}";
  CHECK_STATUS(dyn__proto_prefill_request_decode(bad, strlen(bad), &d, &why), DYN_EINVAL);
  CHECK_EQ_STR(why, "prefill request: no_kv must be true or false");
  bad = "{\"token_ids\":[1]}";
  CHECK_STATUS(dyn__proto_prefill_request_decode(bad, strlen(bad), &d, &why), DYN_EINVAL);
  CHECK_EQ_STR(why, "prefill request: kv_layout (a string) is missing");
}

int main(void) {
  test_logprobs();
  test_gen_request();
  test_delta();
  test_route();
  test_engine();
  test_prefill_request();
  test_load();
  test_errors();
  TEST_END();
}
