"""The Processor puts BOS before a prompt when the model file asks for it
(tokenizer.ggml.add_bos_token), as llama-server does: for completions, and
for chat prompts whose template does not already start with BOS; never
twice. The graph is agg (simulated engine) with the Processor reading a
small GGUF tokenizer this test writes; what reaches the engine shows in
usage.prompt_tokens, which is counted from the ids the Worker got."""

import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from test_llm_graph import graph  # noqa: E402,F401  (the fixture)

# GGUF value types.
U32, BOOL, STRING, ARRAY = 4, 7, 8, 9


def byte_chars():
    """GPT-2's byte-level alphabet: byte -> the character standing for it."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def gguf(path, add_bos, bos):
    """A tokenizer-only GGUF: the 256 byte tokens, "he" (one merge),
    <|im_start|> and <|im_end|> (control), <s> (control); BOS is `bos`."""
    chars = byte_chars()
    tokens = [chars[b] for b in range(256)] + ["he", "<|im_start|>", "<|im_end|>", "<s>"]
    types = [1] * 257 + [3, 3, 3]
    ids = {t: i for i, t in enumerate(tokens)}
    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

    def s(x):
        x = x.encode()
        return struct.pack("<Q", len(x)) + x

    kvs = [("general.architecture", STRING, s("llama")),
           ("tokenizer.ggml.model", STRING, s("gpt2")),
           ("tokenizer.ggml.pre", STRING, s("smollm")),
           ("tokenizer.ggml.tokens", ARRAY,
            struct.pack("<IQ", STRING, len(tokens)) + b"".join(s(t) for t in tokens)),
           ("tokenizer.ggml.token_type", ARRAY,
            struct.pack("<IQ", 5, len(types)) + struct.pack(f"<{len(types)}i", *types)),
           ("tokenizer.ggml.merges", ARRAY, struct.pack("<IQ", STRING, 1) + s("h e")),
           ("tokenizer.ggml.bos_token_id", U32, struct.pack("<I", ids[bos])),
           ("tokenizer.ggml.eos_token_id", U32, struct.pack("<I", ids["<|im_end|>"])),
           ("tokenizer.ggml.add_bos_token", BOOL, struct.pack("<B", add_bos)),
           ("tokenizer.chat_template", STRING, s(template))]
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, kind, value in kvs:
        body += s(key) + struct.pack("<I", kind) + value
    Path(path).write_bytes(body)
    return len(tokens)


def serve(graph, tmp_path, name, add_bos, bos):
    path = tmp_path / f"{name}.gguf"
    n = gguf(path, add_bos, bos)
    return graph("agg", f"--Processor.tokenizer={path}", f"--Common.vocab-size={n}",
                 "--Worker.min-token-id=0", workers=1)


def prompt_tokens(s, prompt=None, messages=None):
    if messages:
        r = s.client.chat.completions.create(model="dynamo-sim", messages=messages, max_tokens=1)
    else:
        r = s.client.completions.create(model="dynamo-sim", prompt=prompt, max_tokens=1)
    return r.usage.prompt_tokens


# "hello" is he, l, l, o; the chat prompt below is 21 tokens
# (<|im_start|> user \n h i <|im_end|> \n <|im_start|> assistant \n, one
# token per character otherwise).
CHAT = [{"role": "user", "content": "hi"}]


def test_no_bos_when_the_model_asks_for_none(graph, tmp_path):
    s = serve(graph, tmp_path, "plain", add_bos=False, bos="<s>")
    assert prompt_tokens(s, "hello") == 4
    assert prompt_tokens(s, messages=CHAT) == 21


def test_bos_before_completions_and_chat(graph, tmp_path):
    s = serve(graph, tmp_path, "bos", add_bos=True, bos="<s>")
    assert "BOS before each prompt" in s.output()
    assert prompt_tokens(s, "hello") == 5
    assert prompt_tokens(s, "<s>hello") == 5  # spelled out: kept, not doubled
    assert prompt_tokens(s, messages=CHAT) == 22


def test_no_second_bos_when_the_template_starts_with_it(graph, tmp_path):
    # SmolLM2's case: BOS is <|im_start|>, which every chatml prompt opens with.
    s = serve(graph, tmp_path, "imstart", add_bos=True, bos="<|im_start|>")
    assert prompt_tokens(s, messages=CHAT) == 21
    assert prompt_tokens(s, "hello") == 5
