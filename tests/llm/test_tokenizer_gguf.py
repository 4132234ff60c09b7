"""Our tokenizer, loaded from a GGUF model file, against llama.cpp's own.

The Processor reads the tokenizer out of the .gguf a config names; its ids
must be the ones llama.cpp's llama_tokenize gives for the same file
(add_special=false, parse_special=true), or the engine sees a different
prompt from the one llama.cpp would. Both sides run as small programs over
the same JSON lines: tokenize_cli (ours) and llama_tokenize_ref (linked
with the pinned llama.cpp build). The model is SmolLM2-135M-Instruct
(byte-level BPE, pre-tokenizer "smollm"), from the model cache that
scripts/fetch_model.sh fills. A missing model or llama.cpp is a failure,
not a skip: this is the check that the tokenizer is right.

The chat template check renders SmolLM2's own tokenizer.chat_template (read
from the file) with Jinja and compares the C rendering byte for byte,
including the default system prompt the template adds.
"""
import json
import os
import pathlib
import random
import struct
import subprocess

import pytest

CLI = os.environ.get("TOKENIZE_CLI", "")
REF = os.environ.get("LLAMA_TOKENIZE_REF", "")
MODEL_DIR = pathlib.Path(os.environ.get("DYN_MODEL_DIR") or pathlib.Path.home() / ".cache/dynamo/models")
MODEL = MODEL_DIR / "smollm2-135m.gguf"


def need_model():
    assert MODEL.is_file(), f"{MODEL} is missing: run scripts/fetch_model.sh smollm2-135m"
    return str(MODEL)


def run_lines(argv, items):
    """Runs a JSON-lines tool over items and returns one parsed line each."""
    stdin = "".join(json.dumps(x) + "\n" for x in items)
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{argv[0]} failed: {p.stderr}"
    out = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(out) == len(items), p.stderr
    return out


# ---- the corpus -------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>",
            "<filename>", "<gh_stars>", "<issue_start>", "<jupyter_code>", "<empty_output>"]

FIXED = [
    "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "\r\n", "\r\n\r\n  x",
    "Hello, world!", "hello world", " Hello", "HELLO WORLD", "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've done it, we'd say it's John's and we're in.",
    "I'M SURE YOU'LL SEE THEY'VE DONE IT", "'s 't 're 've 'm 'll 'd", "''''", "don't",
    "1", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "v1.2.3", "0x1F",
    "١٢٣ ٤٥٦", "²³ ½ Ⅻ", "４５６", "10th 21st", "$100.00", "-42", "1e-9",
    "café naïve résumé façade", "Ünïcödé", "ﬁ ligature", "é (precomposed) vs é (combining)",
    "Привет, мир!", "Γειά σου Κόσμε", "こんにちは世界", "你好，世界！", "안녕하세요 세계",
    "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Xin chào thế giới",
    "😀😃😄 emoji 👍🏽 👨‍👩‍👧 🇫🇷", "★☆✓✗→←↑↓", "∀x∈ℝ: x²≥0", "€£¥₹", "«quoted» „German“ “curly”",
    "\u00a0non-breaking\u00a0space", "ideographic\u3000space", "en\u2002space em\u2003space",
    "line\u2028separator", "para\u2029separator", "next\u0085line", "zero\u200bwidth", "soft\u00adhyphen",
    "tab\tseparated\tvalues", "trailing spaces   ", "   leading spaces", "multiple     spaces inside",
    "\n\n\nnewlines first", "mixed \n\t \n\t whitespace", "a\n b\n  c\n   d",
    "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); }",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "<html><body><p class=\"x\">Hi</p></body></html>", "SELECT * FROM t WHERE a >= 10 AND b <> 'x';",
    "x = [i**2 for i in range(10) if i % 2 == 0]", "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "$ ls -la | grep '^d' && echo \"done\" > /dev/null 2>&1", "a += b; c -= d; e *= f; g /= h;",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Windows\\System32",
    "!!!???...", "...", "---", "___init___", "@@@@", "~~~", "^^^", "|||", "<<<>>>", "====",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nHi<|im_end|>\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>", "text<|im_end|>text", " <|im_start|> ", "<|im_start", "im_start|>",
    "<|im_start|x>", "<<|im_start|>>", "<file_sep>a.py<file_sep>", "<repo_name>x/y<filename>z.c",
    "<jupyter_code>print(1)<empty_output>", "<|endoftext|><|endoftext|>", "< |im_start| >",
]

ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    + list(" \t\n\r.,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`")
    + list("éüñçßøåÆŒЖжΩπλ中文字日本語한국어العربيةहिन्दी١٢٣²½€£→✓😀👍🏽\u00a0\u3000\u200b\u0301")
)
WORDS = ["the", " the", "The", "of", "and", "to", " in", "is", "that", "for", "it", "with", "as",
         "was", "on", "def", "return", "self", "import", "numpy", "np", "print", "()", "{}", "[]",
         "==", "!=", "->", "=>", "::", "//", "/*", "*/", "#", "    ", "\t", "\n", "\r\n", "  ",
         "'s", "'ll", "'t", "n't", "123", "4567", "3.5", "日本", "über", "naïve", "😀", "λ", "—"]


def corpus():
    rng = random.Random(20250307)
    texts = list(FIXED)
    for _ in range(250):  # random characters
        texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40))))
    for _ in range(200):  # random words and whitespace runs
        parts = [rng.choice(WORDS) for _ in range(rng.randint(1, 25))]
        texts.append("".join(p + rng.choice(["", " ", "  ", "\n", "\t", " \n "]) for p in parts))
    for _ in range(100):  # special tokens amid text
        parts = []
        for _ in range(rng.randint(1, 6)):
            parts.append(rng.choice(SPECIALS) if rng.random() < 0.4 else rng.choice(WORDS))
        texts.append(rng.choice(["", " ", "\n"]).join(parts))
    return texts


def test_corpus_is_large_and_varied():
    texts = corpus()
    assert len(texts) >= 500
    assert sum(any(ord(c) > 127 for c in t) for t in texts) >= 100
    assert sum(any(s in t for s in SPECIALS) for t in texts) >= 50
    assert sum("  " in t or "\n\n" in t or "\t" in t for t in texts) >= 100


def test_ids_equal_llama_tokenize():
    model = need_model()
    assert CLI, "TOKENIZE_CLI is not set"
    assert REF, "llama_tokenize_ref was not built: llama.cpp is missing (run scripts/deps.sh)"
    texts = corpus()
    ours = run_lines([CLI, "encode", model], texts)
    theirs = run_lines([REF, model], texts)
    bad = [(t, o, r) for t, o, r in zip(texts, ours, theirs) if o != r]
    assert not bad, f"{len(bad)} of {len(texts)} differ, first: {bad[0]!r}"
    # Not vacuous: the special tokens really became their ids.
    i = texts.index("<|im_start|>user\nHi<|im_end|>\n")
    assert ours[i][0] == 1 and 2 in ours[i]


# ---- the chat template --------------------------------------------------------

def gguf_string(path, key):
    """Reads one string value from a GGUF file's metadata (test-side reader)."""
    with open(path, "rb") as f:
        data = f.read(8 << 20)
    assert data[:4] == b"GGUF"
    _, _, n_kv = struct.unpack_from("<IQQ", data, 4)
    off = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(t, off):
        if t == 8:
            (n,) = struct.unpack_from("<Q", data, off)
            return off + 8 + n
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, off)
            off += 12
            for _ in range(n) if et == 8 else ():
                off = skip(8, off)
            return off if et == 8 else off + n * sizes[et]
        return off + sizes[t]

    for _ in range(n_kv):
        (kl,) = struct.unpack_from("<Q", data, off)
        k = data[off + 8:off + 8 + kl].decode()
        off += 8 + kl
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        if k == key:
            (n,) = struct.unpack_from("<Q", data, off)
            return data[off + 8:off + 8 + n].decode()
        off = skip(t, off)
    raise KeyError(key)


CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke.\nA short one."}],
    [{"role": "user", "content": "  spaces kept  \n"}, {"role": "assistant", "content": ""}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}],
    [{"role": "tool", "content": "42"}, {"role": "user", "content": "ünïcödé 😀"}],
]


def test_chat_prompt_equals_the_template():
    import jinja2

    model = need_model()
    assert CLI, "TOKENIZE_CLI is not set"
    template = gguf_string(model, "tokenizer.chat_template")
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face" in template
    jt = jinja2.Environment().from_string(template)
    for gen in (True, False):
        want = [jt.render(messages=m, add_generation_prompt=gen) for m in CONVERSATIONS]
        got = run_lines([CLI, "chat" if gen else "chat-nogen", model], CONVERSATIONS)
        assert got == want
    # The exact string for the first conversation, default system prompt included.
    got = run_lines([CLI, "chat", model], CONVERSATIONS[:1])[0]
    assert got == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                   "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
                   "<|im_end|>\n<|im_start|>assistant\n")


def test_refusals_name_the_problem(tmp_path):
    assert CLI, "TOKENIZE_CLI is not set"
    model = pathlib.Path(need_model())
    data = model.read_bytes()[: 4 << 20]
    cut = tmp_path / "cut.gguf"
    for size, why in ((100000, "'tokenizer.ggml.tokens' claims 49152 strings, more than"),
                      (600000, "of 'tokenizer.ggml.tokens' (a string of")):
        cut.write_bytes(data[:size])  # inside the token list
        p = subprocess.run([CLI, "encode", str(cut)], input='"x"\n', capture_output=True, text=True)
        assert p.returncode != 0
        assert p.stderr.startswith(f"{cut}: ") and why in p.stderr, p.stderr
    # Another tokenizer type: the same file claiming SentencePiece ("llama").
    i = data.index(b"tokenizer.ggml.model")
    spm = bytearray(data)
    k = i + len(b"tokenizer.ggml.model") + 4 + 8
    assert spm[k:k + 4] == b"gpt2"
    spm[k:k + 4] = b"bert"
    other = tmp_path / "bert.gguf"
    other.write_bytes(bytes(spm))
    p = subprocess.run([CLI, "encode", str(other)], input='"x"\n', capture_output=True, text=True)
    assert p.returncode != 0
    assert "tokenizer.ggml.model 'bert' (WordPiece) is not supported" in p.stderr
    # An unknown pre-tokenizer name.
    j = data.index(b"tokenizer.ggml.pre")
    pre = bytearray(data)
    k = j + len(b"tokenizer.ggml.pre") + 4 + 8
    assert pre[k:k + 6] == b"smollm"
    pre[k:k + 6] = b"zzzzzz"
    unk = tmp_path / "pre.gguf"
    unk.write_bytes(bytes(pre))
    p = subprocess.run([CLI, "encode", str(unk)], input='"x"\n', capture_output=True, text=True)
    assert p.returncode != 0
    assert "tokenizer.ggml.pre 'zzzzzz' is not a supported pre-tokenizer" in p.stderr
