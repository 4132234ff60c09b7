/* test_chat_template.c - each family's rendering, verbatim, of one
 * system + user + assistant + user conversation with a generation prompt;
 * OpenAI JSON messages (content parts, errors); family detection from a
 * tokenizer's special tokens; stop tokens. */
#include <jansson.h>

#include "harness.h"
#include "dynamo/llm/chat.h"

static const dyn_chat_msg_t CONV[] = {
    {"system", "You are helpful.", 16},
    {"user", "Hi!", 3},
    {"assistant", "Hello! How can I help?", 22},
    {"user", "Tell me a joke.", 15},
};

static void expect(dyn_chat_family_t f, bool gen, const char *want) {
  char *out = NULL, err[128];
  size_t len = 0;
  CHECK_STATUS(dyn_chat_render(f, CONV, 4, gen, &out, &len, err, sizeof err), DYN_OK);
  CHECK_EQ_STR(out, want);
  CHECK_EQ_INT(len, out ? strlen(out) : 0);
  free(out);
}

static void test_families(void) {
  expect(DYN_CHAT_LLAMA3, true,
         "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n");
  expect(DYN_CHAT_CHATML, true,
         "<|im_start|>system\nYou are helpful.<|im_end|>\n"
         "<|im_start|>user\nHi!<|im_end|>\n"
         "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
         "<|im_start|>user\nTell me a joke.<|im_end|>\n"
         "<|im_start|>assistant\n");
  expect(DYN_CHAT_CHATML, false,
         "<|im_start|>system\nYou are helpful.<|im_end|>\n"
         "<|im_start|>user\nHi!<|im_end|>\n"
         "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
         "<|im_start|>user\nTell me a joke.<|im_end|>\n");
  expect(DYN_CHAT_MISTRAL, true,
         "<s>[INST] You are helpful.\n\nHi! [/INST]Hello! How can I help?</s>"
         "[INST] Tell me a joke. [/INST]");
  expect(DYN_CHAT_GEMMA, true,
         "<bos><start_of_turn>user\nYou are helpful.\n\nHi!<end_of_turn>\n"
         "<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
         "<start_of_turn>user\nTell me a joke.<end_of_turn>\n"
         "<start_of_turn>model\n");
  expect(DYN_CHAT_PHI3, true,
         "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi!<|end|>\n"
         "<|assistant|>\nHello! How can I help?<|end|>\n<|user|>\nTell me a joke.<|end|>\n"
         "<|assistant|>\n");
  expect(DYN_CHAT_PLAIN, true,
         "system: You are helpful.\nuser: Hi!\nassistant: Hello! How can I help?\n"
         "user: Tell me a joke.\nassistant: ");
}

static void test_details(void) {
  char *out, err[160];
  size_t len;
  /* llama3 and gemma trim content, as their templates do; chatml does not */
  dyn_chat_msg_t m[] = {{"user", "  padded \n", 10}};
  CHECK_STATUS(dyn_chat_render(DYN_CHAT_LLAMA3, m, 1, false, &out, &len, err, sizeof err), DYN_OK);
  CHECK_EQ_STR(out, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|>");
  free(out);
  CHECK_STATUS(dyn_chat_render(DYN_CHAT_CHATML, m, 1, false, &out, &len, err, sizeof err), DYN_OK);
  CHECK_EQ_STR(out, "<|im_start|>user\n  padded \n<|im_end|>\n");
  free(out);
  /* content is bytes with a length, not a C string */
  dyn_chat_msg_t nul[] = {{"user", "a\0b", 3}, {"assistant", NULL, 0}};
  CHECK_STATUS(dyn_chat_render(DYN_CHAT_PLAIN, nul, 2, false, &out, &len, err, sizeof err), DYN_OK);
  CHECK(len == 22 && memcmp(out, "user: a\0b\nassistant: \n", 22) == 0);
  free(out);
  /* roles a family cannot express */
  dyn_chat_msg_t tool[] = {{"user", "x", 1}, {"tool", "y", 1}};
  CHECK_STATUS(dyn_chat_render(DYN_CHAT_MISTRAL, tool, 2, true, &out, &len, err, sizeof err),
               DYN_EINVAL);
  CHECK(strstr(err, "messages[1]: role 'tool' is not supported by the mistral template"));
  CHECK_STATUS(dyn_chat_render(DYN_CHAT_CHATML, tool, 2, true, &out, &len, err, sizeof err), DYN_OK);
  free(out);
  dyn_chat_msg_t late_sys[] = {{"user", "x", 1}, {"system", "y", 1}};
  CHECK_STATUS(dyn_chat_render(DYN_CHAT_GEMMA, late_sys, 2, true, &out, &len, err, sizeof err),
               DYN_EINVAL);
  CHECK(strstr(err, "system message only first"));
  /* empty conversation: just the framing */
  CHECK_STATUS(dyn_chat_render(DYN_CHAT_CHATML, NULL, 0, true, &out, &len, err, sizeof err), DYN_OK);
  CHECK_EQ_STR(out, "<|im_start|>assistant\n");
  free(out);
}

static void test_names(void) {
  dyn_chat_family_t f;
  static const char *names[] = {"plain", "llama3", "chatml", "mistral", "gemma", "phi3"};
  for (int i = 0; i < 6; i++) {
    CHECK_STATUS(dyn_chat_family_from_name(names[i], &f), DYN_OK);
    CHECK_EQ_STR(dyn_chat_family_name(f), names[i]);
  }
  CHECK_STATUS(dyn_chat_family_from_name("jinja", &f), DYN_EINVAL);
}

static void test_json(void) {
  json_error_t je;
  json_t *msgs = json_loads(
      "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
      " {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello \"},"
      "                                {\"type\":\"text\",\"text\":\"there\"}]},"
      " {\"role\":\"assistant\",\"content\":null}]",
      0, &je);
  REQUIRE(msgs);
  char *out, err[160];
  size_t len;
  CHECK_STATUS(dyn_chat_render_json(DYN_CHAT_CHATML, msgs, true, &out, &len, err, sizeof err), DYN_OK);
  CHECK_EQ_STR(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there<|im_end|>\n"
                    "<|im_start|>assistant\n<|im_end|>\n<|im_start|>assistant\n");
  free(out);
  json_decref(msgs);

  static const struct {
    const char *json, *msg;
  } bad[] = {
      {"{}", "'messages' must be an array"},
      {"[1]", "messages[0] must be an object"},
      {"[{\"content\":\"x\"}]", "messages[0].role must be a string"},
      {"[{\"role\":\"user\",\"content\":5}]", "messages[0].content must be a string, null or an array"},
      {"[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]",
       "messages[1].content[0]: part type 'image_url' is not supported"},
      {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":1}]}]",
       "messages[0].content[0].text must be a string"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    json_t *j = json_loads(bad[i].json, JSON_DECODE_ANY, &je);
    REQUIRE(j);
    err[0] = '\0';
    CHECK_STATUS(dyn_chat_render_json(DYN_CHAT_LLAMA3, j, true, &out, &len, err, sizeof err),
                 DYN_EINVAL);
    CHECK_MSG(strstr(err, bad[i].msg) != NULL, "got \"%s\", want \"%s\"", err, bad[i].msg);
    json_decref(j);
  }
}

/* A tokenizer with the given added tokens (ids from 1). */
static dyn_tokenizer_t *with_specials(const char *const *names, size_t n) {
  char json[2048];
  size_t k = (size_t)snprintf(json, sizeof json, "{\"added_tokens\":[");
  for (size_t i = 0; i < n; i++)
    k += (size_t)snprintf(json + k, sizeof json - k,
                          "%s{\"id\":%zu,\"content\":\"%s\",\"special\":true}", i ? "," : "", i + 1,
                          names[i]);
  snprintf(json + k, sizeof json - k,
           "],\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},"
           "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}");
  dyn_tokenizer_t *tk = NULL;
  char err[256];
  int rc = dyn_tokenizer_load_buf(json, strlen(json), "specials", &tk, err, sizeof err);
  CHECK_MSG(rc == DYN_OK, "%s", err);
  return tk;
}

static void test_detect_and_stops(void) {
  static const struct {
    const char *tokens[5];
    size_t n;
    dyn_chat_family_t want;
  } cases[] = {
      {{"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}, 3, DYN_CHAT_LLAMA3},
      {{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}, 3, DYN_CHAT_CHATML},
      {{"<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"}, 4, DYN_CHAT_GEMMA},
      {{"<s>", "</s>", "[INST]", "[/INST]"}, 4, DYN_CHAT_MISTRAL},
      {{"<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"}, 4, DYN_CHAT_PHI3},
      {{"<|endoftext|>"}, 1, DYN_CHAT_PLAIN},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    dyn_tokenizer_t *tk = with_specials(cases[i].tokens, cases[i].n);
    if (!tk) continue;
    CHECK_MSG(dyn_chat_detect(tk) == cases[i].want, "case %zu detected %s", i,
              dyn_chat_family_name(dyn_chat_detect(tk)));
    dyn_tokenizer_free(tk);
  }
  CHECK(dyn_chat_detect(NULL) == DYN_CHAT_PLAIN);

  /* the fixtures made by make_tokenizer.py */
  dyn_tokenizer_t *l3 = NULL, *cm = NULL;
  REQUIRE(dyn_tokenizer_load_file(DYN_TEST_DATA "/tok_llama3.json", &l3, NULL, 0) == DYN_OK);
  REQUIRE(dyn_tokenizer_load_file(DYN_TEST_DATA "/tok_chatml.json", &cm, NULL, 0) == DYN_OK);
  CHECK(dyn_chat_detect(l3) == DYN_CHAT_LLAMA3);
  CHECK(dyn_chat_detect(cm) == DYN_CHAT_CHATML);
  uint32_t ids[4];
  /* llama3: <|eot_id|> (1023), <|end_of_text|> (1020, also the EOS: once) */
  CHECK_EQ_INT(dyn_chat_stop_ids(DYN_CHAT_LLAMA3, l3, ids, 4), 2);
  CHECK(ids[0] == 1023 && ids[1] == 1020);
  /* plain has no stop strings of its own: the tokenizer's EOS only */
  CHECK_EQ_INT(dyn_chat_stop_ids(DYN_CHAT_PLAIN, l3, ids, 4), 1);
  CHECK_EQ_INT(ids[0], 1020);
  CHECK_EQ_INT(dyn_chat_stop_ids(DYN_CHAT_CHATML, cm, ids, 1), 2); /* count beyond cap */
  uint32_t im_end;
  CHECK_STATUS(dyn_tokenizer_token_id(cm, "<|im_end|>", 10, &im_end), DYN_OK);
  CHECK_EQ_INT(ids[0], im_end);
  CHECK_EQ_STR(dyn_chat_stop_strings(DYN_CHAT_GEMMA)[0], "<end_of_turn>");
  CHECK(dyn_chat_stop_strings(DYN_CHAT_PLAIN)[0] == NULL);

  /* a rendered llama3 prompt encodes its framing as special tokens */
  char *p;
  size_t len;
  REQUIRE(dyn_chat_render(DYN_CHAT_LLAMA3, CONV, 2, true, &p, &len, NULL, 0) == DYN_OK);
  dyn_tokens_t t = {0};
  CHECK_STATUS(dyn_tokenizer_encode(l3, p, len, &t), DYN_OK);
  CHECK(t.len > 0 && t.ids[0] == 1019 && t.ids[1] == 1021);
  char *back;
  CHECK_STATUS(dyn_tokenizer_decode(l3, t.ids, t.len, 0, &back, &len), DYN_OK);
  CHECK_EQ_STR(back, p);
  free(back);
  free(p);
  dyn_tokens_free(&t);
  dyn_tokenizer_free(l3);
  dyn_tokenizer_free(cm);
}

int main(void) {
  h_init("chat_template");
  test_families();
  test_details();
  test_names();
  test_json();
  test_detect_and_stops();
  TEST_END();
}
