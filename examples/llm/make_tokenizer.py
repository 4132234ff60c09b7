#!/usr/bin/env python3
"""make_tokenizer.py - train a small byte-level BPE tokenizer, write tokenizer.json.

No model hub can be reached from where dynamo's examples and tests run, yet
the Processor needs a real Hugging Face `tokenizer.json`. This script trains
one with plain Python (stdlib only) on an English corpus embedded below (or
on files given with --corpus) and writes it in the format the `tokenizers`
library reads: GPT-2 style ByteLevel pre-tokenizer and decoder, the 256 byte
tokens first (id = byte value), then one token per merge in training order,
then the special tokens of a chat family as `added_tokens`.

Deterministic: the same corpus, vocab size and family give byte-identical
output (ties between equally frequent pairs break on the pair's text).

usage: make_tokenizer.py OUT.json [--vocab N] [--family llama3|chatml|mistral|gemma|phi3]
                         [--corpus FILE ...] [--merges-format strings|arrays]
"""
import argparse
import heapq
import json
import re
import sys
from collections import Counter, defaultdict

# Special tokens per chat family, in id order after the BPE vocab. The
# names are those the real models use, so chat-template detection in
# src/llm/tokenizer/chat_template.c recognises the family from them.
FAMILIES = {
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
               "<|end_header_id|>", "<|eot_id|>"],
    "chatml": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "mistral": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
    "gemma": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
    "phi3": ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
}

# The GPT-2 split pattern, written for Python's stdlib `re`, which lacks
# \p{L}/\p{N}: [^\W\d_] is "a letter", \d "a number". Close enough for
# training (it only decides which byte pairs get counted); encoding uses
# the exact pattern in tokenizer.json.
SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")

CORPUS = """\
Dynamo is a distributed inference serving framework. Services register
endpoints with a runtime, and callers anywhere on the machine or the cluster
find a live instance and stream responses back over a direct connection.
There is no broker on the data path: the caller talks to the worker straight.

A large language model turns a prompt into text one token at a time. The
prompt is first split into tokens by a tokenizer. Each token is a small
piece of text: a whole word, part of a word, a number, a space followed by
a word, or a single byte when nothing larger fits. The model reads the
token ids, computes attention over every earlier token, and predicts the
next one. The engine samples that token, appends it to the sequence, and
repeats until it produces a stop token or reaches the maximum length.

Computing attention needs the keys and values of every earlier token. An
engine keeps them in a cache so that each new token costs one step instead
of a pass over the whole prompt. The cache is divided into blocks of a fixed
number of tokens. Two requests that begin with the same system prompt share
the blocks of that prefix, so the second request skips the work the first
one already did. This is called prefix caching, and it is why routing
matters: a request sent to the worker that already holds its prefix starts
producing tokens sooner than a request sent to a worker that must compute
everything again.

The router keeps an index of which worker holds which blocks. Workers
publish events when they store a block and when they evict one. The index is
a radix tree keyed by block hashes, where each hash covers the tokens of its
block and every block before it. For a new request the router hashes the
prompt, walks the tree, and learns how many blocks each worker already has.
It then weighs the prefill work saved against how busy each worker is, and
picks the worker with the lowest cost. When a worker leaves, its blocks are
removed from the index at once.

The frontend speaks the same protocol as the OpenAI API. A client sends a
list of messages, each with a role and some content: a system message that
sets the behaviour, user messages with questions, and assistant messages
with earlier answers. The processor renders the conversation with the chat
template of the model family, encodes it, and sends the token ids to the
engine. As tokens come back it decodes them incrementally, taking care never
to split a character that spans several bytes, and streams the text to the
client as server-sent events. When the client disconnects, the request is
cancelled all the way down to the engine, which frees its slot and its
blocks for someone else.

Measurements matter more than claims. We record the time to the first
token, the time between tokens, and the number of requests completed per
second. We compare routing by cache overlap with round robin and random
choice on the same workload, with the same seed, on the same machine. We
write down what we measured, how we measured it, and what we left out.

Once upon a time, in a small town by the sea, there lived an old clockmaker
who repaired watches for the fishermen. Every morning he opened his shop at
seven, swept the floor, and wound the clocks on the wall. The children
would stop by the window on their way to school to watch the tiny gears
turning. One winter a storm broke the great clock in the town square, and
nobody knew how to fix it. The clockmaker climbed the tower with his tools,
worked through the night in the cold wind, and by dawn the clock was
striking the hours again. The people cheered, and from that day on they
called him the keeper of time.

Good software is written for people to read and only incidentally for
machines to execute. Choose names that say what a thing is for. Keep
functions short and give each file one concern. Return errors instead of
hiding them, and let the message name what was wrong: the file, the field,
the value that was expected and the value that was found. Test the behaviour
that matters, and make each test fail when the code it checks is broken.
Measure before you optimise, and measure again after.

Numbers appear everywhere: 1, 2, 3, 10, 42, 100, 256, 1024, 4096, 65536,
the year 2024, version 3.11, a price of 19.99, a ratio of 3:1, a latency
of 12 ms at p50 and 48 ms at p99, 8 workers with 16 slots each, 4,000
tokens per prompt, 128 blocks of 16 tokens.

def encode(text):
    ids = []
    for word in split(text):
        ids.extend(bpe(word))
    return ids

if (n < 0 || n > max) { return -EINVAL; }
for (size_t i = 0; i < len; i++) sum += buf[i];
{"role": "user", "content": "What is the capital of France?"}
{"role": "assistant", "content": "The capital of France is Paris."}

Questions people ask: What is the weather like today? How do I bake bread?
Can you explain how a transformer works? Why is the sky blue? Who wrote
this poem? Where can I find the documentation? When does the train leave?
Which option should I choose, and why? Please summarise the following text
in three sentences. Translate this paragraph into French. Write a short
story about a dragon who is afraid of the dark.

Un café, s'il vous plaît. Où est la gare ? Ça coûte combien ? Très bien,
merci beaucoup. Die Straße ist schön, und das Mädchen läuft schnell über
die Brücke. El niño comió una manzana en la montaña. São Paulo é uma cidade
enorme. Naïve résumé, façade, jalapeño, crème brûlée, smörgåsbord.
"""


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def word_counts(texts, b2u):
    counts = Counter()
    for text in texts:
        for piece in SPLIT.findall(text):
            counts[tuple(b2u[b] for b in piece.encode("utf-8"))] += 1
    return counts


def train(counts, n_merges):
    """Classic BPE training with incremental pair counts and a lazy max-heap."""
    words = [list(w) for w in counts]
    freq = [counts[w] for w in counts]
    pairs = Counter()
    where = defaultdict(set)  # pair -> indices of words containing it
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += freq[i]
            where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        negc, pair = heapq.heappop(heap)
        if pairs.get(pair, 0) != -negc or negc == 0:
            continue  # stale entry
        merges.append(pair)
        a, b = pair
        new = a + b
        touched = Counter()
        for i in sorted(where.pop(pair, ())):
            w = words[i]
            f = freq[i]
            for x, y in zip(w, w[1:]):
                pairs[(x, y)] -= f
                touched[(x, y)] += 1
            out = []
            j = 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += f
                touched[(x, y)] += 1
                where[(x, y)].add(i)
        pairs.pop(pair, None)
        for p in sorted(touched):
            if p != pair and pairs.get(p, 0) > 0:
                heapq.heappush(heap, (-pairs[p], p))
    return merges


def build(texts, vocab_size, family, merges_format):
    b2u = bytes_to_unicode()
    specials = FAMILIES[family]
    n_merges = max(0, vocab_size - 256 - len(specials))
    merges = train(word_counts(texts, b2u), n_merges)
    vocab = {b2u[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, s in enumerate(specials)]
    if merges_format == "arrays":
        merge_list = [[a, b] for a, b in merges]
    else:
        merge_list = [a + " " + b for a, b in merges]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                    "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merge_list},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=2048,
                    help="target vocabulary size including bytes and specials (default 2048); "
                         "training stops early when the corpus has no pair left to merge")
    ap.add_argument("--family", choices=sorted(FAMILIES), default="llama3")
    ap.add_argument("--corpus", action="append", default=[],
                    help="train on this UTF-8 text file instead of the built-in corpus (repeatable)")
    ap.add_argument("--merges-format", choices=["strings", "arrays"], default="strings")
    args = ap.parse_args(argv)
    if args.vocab < 256 + len(FAMILIES[args.family]):
        ap.error("--vocab must be at least 256 + the number of special tokens")
    # The built-in corpus is small; its upper- and title-case copies give
    # the trainer distinct words ("The", "THE", " the") to merge, so that a
    # vocabulary of 2,000-4,000 tokens is reachable from a few KB of text.
    texts = [CORPUS, CORPUS.upper(), CORPUS.title()]
    if args.corpus:
        texts = []
        for path in args.corpus:
            with open(path, encoding="utf-8") as f:
                texts.append(f.read())
    tok = build(texts, args.vocab, args.family, args.merges_format)
    data = json.dumps(tok, ensure_ascii=False, indent=1) + "\n"
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(data)
    n = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
    print(f"{args.out}: {n} tokens ({len(tok['model']['merges'])} merges, family {args.family})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
