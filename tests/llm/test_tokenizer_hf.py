"""test_tokenizer_hf.py - the C tokenizer against the reference implementations.

Our ids must be exactly HF tokenizers' (`encode(text, add_special_tokens=False)`)
or a model sees different input than it was trained on. This runs a few
hundred varied strings (ASCII, contractions, numbers, whitespace runs,
accents, CJK, emoji, RTL scripts, control characters, special tokens in the
text) through tests/llm/tokenize_cli and through `tokenizers`, for the
fixture tokenizers, a freshly generated one, and variants that exercise the
Llama 3 layout (Split + ByteLevel in a Sequence, ignore_merges) and
add_prefix_space. The split patterns alone are checked against the `regex`
module, which has the same \\p{L}/\\p{N} classes as HF's Oniguruma.

Needs: pip install tokenizers regex. Missing, the test FAILS (it does not skip).
"""
import json
import os
import random
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(HERE, "data")
CLI = os.environ.get("TOKENIZE_CLI", "")
MAKE = os.path.join(ROOT, "examples", "llm", "make_tokenizer.py")

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


def need(module):
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"Python module '{module}' is not installed: pip install {module} "
                    f"(for {sys.executable}); this test compares against it and does not skip")


FRAGMENTS = [
    "Hello", " world", "the", " The", "THE", "clockmaker", " tokens", "prefix", " caching",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "don't", "I'm", "we'RE",
    "1", "42", " 2024", "1234567", "3.14159", "19.99", "1,000,000", "٣٤٥", "Ⅻ", "½",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t  \n", "    ", "\u00a0",
    "\u2028", "\u2029", "\u1680", "\u180e", "\u3000", "\u0085", "\x0b", "\x0c", "\x1c",
    ",", ".", "!", "?", "...", "--", "(", ")", "{", "}", "[", "]", "<", ">", "|", "\\",
    "\"", "#", "$", "%", "&", "*", "+", "=", "@", "^", "_", "`", "~", ";", ":", "/",
    "café", " naïve", "résumé", "Straße", "Mädchen", "façade", "jalapeño", "crème brûlée",
    "日本語", "中文", "한국어", " テスト", "漢字かなカナ", "Привет", " мир", "Ελληνικά",
    "مرحبا", "שלום", "नमस्ते", "ภาษาไทย", "e\u0301", "a\u0308\u0301",
    "🎉", "🚀🔥", "👨\u200d👩\u200d👧", "🇫🇷", "✓", "€", "£", "©", "™", "°", "∑", "≥",
    "\x00", "\x01", "\x7f", "\u200b", "\ufeff", "\ufffd",
    "def f(x):\n    return x", "if (a && b) { x++; }", "{\"role\": \"user\"}", "https://example.com/a?b=c",
    "<|eot_id|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id", "<|", "|>",
]


def corpus(seed=1234, n=300):
    rng = random.Random(seed)
    out = ["", " ", "a", "Hello world", "  leading and trailing  ", "\n", "x" * 3000,
           " " * 500 + "y", "ab" * 700, "🎉" * 50, "The quick brown fox jumps over the lazy dog. " * 40]
    # long words of common letters: BPE's heap path (words over 48 bytes)
    for length in (49, 60, 100, 250, 1000):
        out.append(" " + "".join(rng.choice("etaoinshrdlucmw") for _ in range(length)))
        out.append("".join(rng.choice(["the", "ing", "er", "clock", "é", "日本"]) for _ in range(length // 3)))
    while len(out) < n:
        k = rng.randint(1, 25)
        out.append("".join(rng.choice(FRAGMENTS) for _ in range(k)))
    return out


def run_cli(mode, arg, inputs):
    assert CLI and os.path.exists(CLI), "TOKENIZE_CLI must name the built tokenize_cli (run via ctest)"
    data = "".join(json.dumps(x) + "\n" for x in inputs)
    p = subprocess.run([CLI, mode, arg], input=data.encode(), capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().split("\n")[:-1]  # not splitlines: U+2028 is text here
    assert len(lines) == len(inputs)
    return [json.loads(l) for l in lines]


def variant(src, dst, edit):
    with open(src, encoding="utf-8") as f:
        tok = json.load(f)
    edit(tok)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    return dst


def llama3_layout(tok):
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": CL100K}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    tok["model"]["ignore_merges"] = True


def prefix_space(tok):
    tok["pre_tokenizer"]["add_prefix_space"] = True


@pytest.fixture(scope="module")
def tokenizers_paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tok")
    big = str(tmp / "big.json")
    subprocess.run([sys.executable, MAKE, big, "--vocab", "4000"], check=True)
    base = os.path.join(DATA, "tok_llama3.json")
    return {
        "fixture_llama3": base,
        "fixture_chatml_arrays": os.path.join(DATA, "tok_chatml.json"),
        "generated_4000": big,
        "llama3_layout": variant(big, str(tmp / "l3.json"), llama3_layout),
        "add_prefix_space": variant(base, str(tmp / "ps.json"), prefix_space),
    }


@pytest.mark.parametrize("which", ["fixture_llama3", "fixture_chatml_arrays", "generated_4000",
                                   "llama3_layout", "add_prefix_space"])
def test_encode_matches_hf(tokenizers_paths, which):
    tk = need("tokenizers")
    path = tokenizers_paths[which]
    ref = tk.Tokenizer.from_file(path)
    texts = corpus()
    ours = run_cli("encode", path, texts)
    bad = [(t, o, ref.encode(t, add_special_tokens=False).ids) for t, o in zip(texts, ours)
           if o != ref.encode(t, add_special_tokens=False).ids]
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {bad[0]!r}"
    # decode(encode(x)) == x and == HF's decode, the detokenizer's pieces join to it
    decoded = run_cli("decode", path, ours)
    if which != "add_prefix_space":  # (that one decodes with the added space, as HF)
        assert decoded == texts
    assert decoded == [ref.decode(ids, skip_special_tokens=False) for ids in ours]
    pieces = run_cli("detok", path, ours)
    assert ["".join(p) for p in pieces] == decoded


def test_decode_random_ids_matches_hf(tokenizers_paths):
    """Random ids cut characters anywhere: the U+FFFD repair must be HF's."""
    tk = need("tokenizers")
    path = tokenizers_paths["fixture_llama3"]
    ref = tk.Tokenizer.from_file(path)
    rng = random.Random(7)
    n = ref.get_vocab_size()
    seqs = [[rng.randrange(n) for _ in range(rng.randint(0, 30))] for _ in range(300)]
    seqs += [[rng.randrange(128, 256) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    ours = run_cli("decode", path, seqs)
    assert ours == [ref.decode(s, skip_special_tokens=False) for s in seqs]
    assert ["".join(p) for p in run_cli("detok", path, seqs)] == ours


@pytest.mark.parametrize("name,pattern", [("gpt2", GPT2), ("cl100k", CL100K)])
def test_split_patterns_match_regex_module(name, pattern):
    regex = need("regex")
    texts = corpus(seed=99, n=400)
    ours = run_cli("split", name, texts)
    ref = [regex.findall(pattern, t) for t in texts]
    bad = [(t, o, r) for t, o, r in zip(texts, ours, ref) if o != r]
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {bad[0]!r}"


def test_make_tokenizer_is_deterministic_and_loads(tmp_path):
    tk = need("tokenizers")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        subprocess.run([sys.executable, MAKE, str(p), "--vocab", "3000", "--family", "chatml"],
                       check=True)
    assert a.read_bytes() == b.read_bytes()
    t = tk.Tokenizer.from_file(str(a))
    assert 2500 <= t.get_vocab_size() <= 3000
    assert t.token_to_id("<|im_start|>") is not None
    enc = t.encode("<|im_start|>user\nhello<|im_end|>", add_special_tokens=False)
    assert enc.tokens[0] == "<|im_start|>" and enc.tokens[-1] == "<|im_end|>"
