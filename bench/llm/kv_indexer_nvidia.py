#!/usr/bin/env python3
"""kv_indexer_nvidia.py - NVIDIA Dynamo's KV indexer on kv_indexer_bench's workload.

NVIDIA's `ai-dynamo-runtime` wheel (installed by bench/nvidia/setup.sh into
bench/.venv-nvidia) exposes its Rust radix tree to Python as
`dynamo.llm.RadixTree`: `apply_event(worker_id, bytes)` takes one KV cache
event serialized as JSON ({"event_id", "data": {"stored": {"parent_hash",
"blocks": [{"block_hash", "tokens_hash"}]}} | {"removed": {"block_hashes"}}
| "cleared"}), and `find_matches(local_hashes)` returns per-worker overlap
scores. The tree runs on its own background thread; calls hop to it.

This drives it with the same shapes as bench/llm/kv_indexer_bench.c:
 (1) 64 workers storing a shared system prompt (64 blocks, one of 32) plus a
     user part (16..128 blocks), evicting their oldest user parts (leaves
     first) past 10,000 blocks; block events (stored + removed) per second.
     The JSON is serialized before the clock starts; the timed part is the
     apply_event calls and one final find_matches (which queues behind them,
     so it returns once all are applied).
 (2) find_matches of a 256-block prompt on a tree of 64 workers x ~10,000
     blocks (conversations of 256 blocks cached on 1..4 workers at various
     depths), and on a prompt all 64 workers hold in full: p50 / p99 per
     call, measured from Python (so it includes the Python-to-Rust call and
     the hop to the tree's thread: that is how this API is driven).

usage: bench/.venv-nvidia/bin/python bench/llm/kv_indexer_nvidia.py [blocks]
Prints the same table rows as kv_indexer_bench, or says exactly why it
cannot drive the indexer (exit status 2).
"""
import json
import random
import sys
import time

WORKERS = 64
CAPACITY = 10000
SYS_PROMPTS = 32
SYS_BLOCKS = 64
QUERY_BLOCKS = 256


def cannot(why):
    print(f"| NVIDIA ai-dynamo RadixTree: cannot be driven: {why} |")
    sys.exit(2)


try:
    import dynamo.llm as nvllm  # noqa: E402
except Exception as e:  # the venv, the wheel, or its shared libraries
    cannot(f"`import dynamo.llm` failed ({type(e).__name__}: {e}); "
           "run bench/nvidia/setup.sh and use bench/.venv-nvidia/bin/python")
RadixTree = getattr(nvllm, "RadixTree", None)
if RadixTree is None:
    cannot("this ai-dynamo-runtime has no dynamo.llm.RadixTree")
for m in ("apply_event", "find_matches", "remove_worker"):
    if not hasattr(RadixTree, m):
        cannot(f"dynamo.llm.RadixTree has no {m}()")

rng = random.Random(42)


def rnd():
    return rng.getrandbits(64)


def chain(n):
    return [(rnd(), rnd()) for _ in range(n)]  # (seq/block hash, local/tokens hash)


def stored(eid, blocks, parent=None):
    return json.dumps({"event_id": eid, "data": {"stored": {
        "parent_hash": parent,
        "blocks": [{"block_hash": s, "tokens_hash": l} for s, l in blocks]}},
        "dp_rank": 0}).encode()


def removed(eid, hashes):
    return json.dumps({"event_id": eid, "data": {"removed": {"block_hashes": hashes}},
                       "dp_rank": 0}).encode()


sys_prompt = [chain(SYS_BLOCKS) for _ in range(SYS_PROMPTS)]


def sanity():
    """The API does what the table assumes: a chain, a parent, a removal."""
    t = RadixTree()
    a = chain(4)
    t.apply_event(1, stored(0, a[:2]))
    t.apply_event(1, stored(1, a[2:], parent=a[1][0]))
    t.apply_event(2, stored(0, a[:1]))
    t.apply_event(1, removed(2, [a[3][0]]))
    got = {k[0] if isinstance(k, tuple) else k: v
           for k, v in t.find_matches([l for _, l in a]).scores.items()}
    if got != {1: 3, 2: 1}:
        cannot(f"find_matches after a known event sequence gave {got}, expected {{1: 3, 2: 1}}")


def build_events(target):
    events = []  # (worker, json bytes)
    has_sys = [set() for _ in range(WORKERS)]
    fifo = [[] for _ in range(WORKERS)]
    held = [0] * WORKERS
    n_st = n_rm = 0
    eid = 0
    while n_st + n_rm < target:
        w, s, user = rng.randrange(WORKERS), rng.randrange(SYS_PROMPTS), 16 + rng.randrange(113)
        part = chain(user)
        if s in has_sys[w]:
            events.append((w, stored(eid, part, parent=sys_prompt[s][-1][0])))
            n = user
        else:
            events.append((w, stored(eid, sys_prompt[s] + part)))
            n = SYS_BLOCKS + user
            has_sys[w].add(s)
        eid += 1
        n_st += n
        held[w] += n
        fifo[w].append(part)
        while held[w] > CAPACITY and fifo[w]:
            old = fifo[w].pop(0)
            events.append((w, removed(eid, [h for h, _ in reversed(old)])))
            eid += 1
            n_rm += len(old)
            held[w] -= len(old)
    return events, n_st, n_rm


def bench_events(target):
    events, n_st, n_rm = build_events(target)
    probe = [sys_prompt[0][0][1]]
    rates = []
    for _ in range(3):
        t = RadixTree()
        t0 = time.perf_counter()
        for w, b in events:
            t.apply_event(w, b)
        t.find_matches(probe)  # queued behind every event: all applied
        rates.append((n_st + n_rm) / (time.perf_counter() - t0))
        del t
    rates.sort()
    best = rates[-1]
    print(f"| {'NVIDIA RadixTree apply_event (JSON)':41s} | {best / 1e6:10.2f} M | "
          f"{best * len(events) / (n_st + n_rm) / 1e6:10.2f} M | median {rates[1] / 1e6:.2f} M of 3; "
          f"{len(events)} events, {(n_st + n_rm) / 1e6:.1f} M blocks ({n_st / 1e6:.1f} M stored, "
          f"{n_rm / 1e6:.1f} M removed) |")
    print(f"RESULT name=nv_kv_apply block_events_per_s={best:.0f}")


def pct(xs, p):
    return xs[min(len(xs) - 1, len(xs) * p // 100)]


def bench_queries():
    t = RadixTree()
    nconv = WORKERS * CAPACITY // ((QUERY_BLOCKS - SYS_BLOCKS) * 2) + 1
    convs = []
    held = [0] * WORKERS
    eid = 0
    for _ in range(nconv):
        s = rng.randrange(SYS_PROMPTS)
        c = sys_prompt[s] + chain(QUERY_BLOCKS - SYS_BLOCKS)
        convs.append(c)
        for k in range(1 + rng.randrange(4)):
            w = rng.randrange(WORKERS)
            if held[w] >= CAPACITY:
                continue
            depth = QUERY_BLOCKS if k == 0 else SYS_BLOCKS + rng.randrange(QUERY_BLOCKS - SYS_BLOCKS + 1)
            t.apply_event(w, stored(eid, c[:depth]))
            eid += 1
            held[w] += depth  # an upper bound: shared system prompts count once in the tree
    hot = chain(QUERY_BLOCKS)
    for w in range(WORKERS):
        t.apply_event(w, stored(eid, hot))
        eid += 1
    t.find_matches([hot[0][1]])  # all applied
    Q = 20000
    for name, make in (
        ("conversation_turn", lambda: None),
        ("all_64_hold_256", lambda: [l for _, l in hot]),
    ):
        lat, depth, nw = [], 0, 0
        fixed = make()
        for _ in range(Q):
            if fixed is None:
                c = convs[rng.randrange(nconv)]
                known = QUERY_BLOCKS - rng.randrange(QUERY_BLOCKS - SYS_BLOCKS - 64 + 1)
                q = [c[i][1] if i < known else rnd() for i in range(QUERY_BLOCKS)]
            else:
                q = fixed
            t0 = time.perf_counter_ns()
            r = t.find_matches(q)
            lat.append((time.perf_counter_ns() - t0) / 1e3)
            sc = r.scores
            depth += max(sc.values()) if sc else 0
            nw += len(sc)
        lat.sort()
        print(f"| NVIDIA find_matches {name:21s} | p50 {pct(lat, 50):6.2f} us | p99 {pct(lat, 99):6.2f} us | "
              f"max {lat[-1]:6.2f} us | depth {depth / Q:5.1f}, {nw / Q:4.1f} workers |")
        print(f"RESULT name=nv_kv_find_matches_{name} p50_us={pct(lat, 50):.2f} p99_us={pct(lat, 99):.2f}")


def main():
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    sanity()
    try:
        import importlib.metadata as md
        ver = md.version("ai-dynamo-runtime")
    except Exception:
        ver = "?"
    print(f"| NVIDIA ai-dynamo-runtime {ver}, dynamo.llm.RadixTree, driven from Python |")
    bench_events(target)
    bench_queries()


if __name__ == "__main__":
    main()
