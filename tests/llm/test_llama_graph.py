"""The llama.cpp engine served by `dynamo serve` (examples/llm/configs/
*_llama.yaml, SmolLM2-135M, which scripts/deps.sh fetches), with the
Processor reading the tokenizer and chat template from the .gguf itself,
through HTTP with the official openai client:

- a greedy chat answer is the right one ("Paris");
(c) a repeated long prompt is served from the prefix cache (cached_tokens);
(d) the Router sends a conversation's next turn to the worker whose real KV
    cache holds its earlier turns, from the engine's KV events (seen in
    cached_tokens and in each worker's /metrics), and routes token ids to
    the worker holding their prefix;
- logprobs of the real model through the graph, stream and not;
- a stream whose worker is killed (kill -9) is migrated and its text agrees
  with the same request run uninterrupted (issue 14);
(e) a client that disconnects frees the sequence's cells;
(f) a prompt longer than the model's context gets a 400 naming the limit;
(g) a missing .gguf makes the worker exit with an error naming the file,
    and `dynamo serve` reports it and stops instead of hanging.

"Agree" means equal token for token, or first differing where the
uninterrupted run's top two log-probabilities are within 0.1 (a near-tie:
batching and a cached prefix legitimately change floating-point sums)."""

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from test_llm_graph import (GRAPHS, CONFIGS, collect, free_port, free_port_run,  # noqa: E402
                            scrape, start_stream, worker_instances)
from conftest import Serve, env_for_tests  # noqa: E402

from dynamo.runtime import DistributedRuntime  # noqa: E402

MODEL = "smollm2-135m"
# Greedy, SmolLM2 answers this with "The capital of France is Paris."; with
# the template's default system prompt instead it wanders off (llama-server
# --jinja -nr gives the same tokens).
FRANCE = [{"role": "system", "content": "Answer in one short sentence."},
          {"role": "user", "content": "What is the capital of France?"}]


def start(graph, config, *overrides, workers=1):
    port = free_port()
    s = Serve([f"{GRAPHS}/{graph}.py:Frontend", "-f", f"{CONFIGS}/{config}.yaml",
               f"--Frontend.port={port}", f"--Worker.ServiceArgs.workers={workers}",
               "--Worker.threads=1", "--Worker.num-blocks=128", *overrides],
              env_for_tests(DYN_LOG="info"))
    s.port = port
    s.wait_for("Frontend ready", timeout=60)
    s.wait_for("Worker ready", count=workers, timeout=60)
    s.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    return s


def stop_all(started):
    for s in started:
        if s.proc.poll() is None:
            assert s.stop() == 0, s.output()
        assert "Sanitizer" not in s.output(), s.output()


@pytest.fixture(scope="module")
def router_graph():
    """agg_router_llama with its two workers, shared by the tests that only
    ask questions (each uses prompts of its own); the health ports of the
    graph's 5 processes (Frontend, Processor, Router, 2 Workers) serve
    /metrics."""
    base = free_port_run(5)
    s = start("agg_router", "agg_router_llama", "--health-port", str(base), workers=2)
    s.health = [base + i for i in range(5)]
    yield s
    stop_all([s])


@pytest.fixture
def served():
    started = []

    def go(*args, **kw):
        s = start(*args, **kw)
        started.append(s)
        return s

    yield go
    stop_all(started)


def test_router_follows_the_real_engines_kv_events(router_graph):
    s = router_graph
    workers = worker_instances(s)
    assert len(workers) == 2

    async def scenario():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        engine = await rt.namespace("dynamo").component("Worker").endpoint("generate").client()
        router = await rt.namespace("dynamo").component("Router").endpoint("generate").client()
        await engine.wait_for_instances(2, timeout=20)
        await router.wait_for_instances(1, timeout=20)
        # Turn 1 of two conversations, one on each worker: 100 tokens, 6
        # full blocks of 16, each computed by that worker's llama.cpp.
        turns = {i: [300 + 50 * i + (k * 7) % 900 for k in range(100)] for i in workers}
        for i, (iid, _) in workers.items():
            body = json.dumps({"token_ids": turns[i], "max_tokens": 2, "temperature": 0}).encode()
            out = await collect(engine.direct(body, iid))
            assert out[-1]["finish_reason"] in ("length", "stop"), out

        async def ask(tokens):
            msgs = await collect(router.generate(json.dumps({"token_ids": tokens}).encode()))
            return int(msgs[0]["worker_id"], 16), msgs[0]["overlap_blocks"]

        deadline = time.time() + 10
        while True:  # the KV events travel over the bus
            answers = {i: await ask(turns[i] + [11, 12, 13] * 10) for i in workers}
            if all(answers[i] == (workers[i][0], 6) for i in workers) or time.time() > deadline:
                break
            await asyncio.sleep(0.05)
        for i in workers:  # turn 2 goes where turn 1 is cached
            assert answers[i] == (workers[i][0], 6), (i, answers, workers)
        # And that worker really takes the prefix from its cache.
        i = next(iter(workers))
        body = json.dumps({"token_ids": turns[i] + [11, 12, 13] * 10, "max_tokens": 1,
                           "temperature": 0}).encode()
        out = await collect(engine.direct(body, workers[i][0]))
        assert out[0]["cached_tokens"] >= 96, out
        rt.close()

    asyncio.run(scenario())


def test_greedy_chat_answers_paris(router_graph):
    r = router_graph.client.chat.completions.create(model=MODEL, messages=FRANCE,
                                                    temperature=0, max_tokens=20)
    answer = r.choices[0].message.content
    print("greedy answer:", answer)
    assert "Paris" in answer, answer
    assert r.choices[0].finish_reason == "stop"  # <|im_end|> ended it
    assert r.usage.completion_tokens < 20
    # ignore_eos (as vLLM takes it): neither the model's end-of-generation
    # nor the template's end-of-turn ends the answer, max_tokens does.
    r = router_graph.client.chat.completions.create(model=MODEL, messages=FRANCE,
                                                    temperature=0, max_tokens=40,
                                                    extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 40


def per_instance(text, name):
    """instance label -> value of the Worker samples of name."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and 'component="Worker"' in line:
            head, value = line.rsplit(" ", 1)
            out[head.split('instance="')[1].split('"')[0]] = float(value)
    return out


def worker_metrics(s, **want):
    """Each Worker's engine counters, once every counter in `want` (name ->
    total over the workers) is reached: the workers update their metrics
    with the load they publish, a moment after a request ends."""
    deadline = time.time() + 10
    while True:
        text = "".join(scrape(p) for p in s.health)
        got = {n: per_instance(text, f"dynamo_engine_{n}_total")
               for n in ("requests", "prompt_tokens", "cached_prompt_tokens")}
        if all(sum(got[n].values()) >= v for n, v in want.items()) or time.time() > deadline:
            return got
        time.sleep(0.05)


def test_next_turn_of_a_conversation_goes_to_the_worker_holding_it(router_graph):
    """(d) through HTTP: turn 2 of a conversation lands on the worker that
    served turn 1, which takes turn 1's blocks from its real KV cache: the
    client sees them as cached_tokens, and that worker's /metrics count them
    (dynamo_engine_cached_prompt_tokens_total per instance)."""
    s = router_graph
    c = s.client
    before = worker_metrics(s)
    n0 = sum(before["requests"].values())
    msgs = [{"role": "system", "content": "You are a guide to the cities of Europe. " * 12},
            {"role": "user", "content": "Name a city in Italy."}]
    r1 = c.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=12)
    mid = worker_metrics(s, requests=n0 + 1)
    first = [i for i in mid["requests"] if mid["requests"][i] > before["requests"].get(i, 0)]
    assert len(first) == 1, (before, mid)
    msgs += [{"role": "assistant", "content": r1.choices[0].message.content},
             {"role": "user", "content": "And one in Spain?"}]
    r2 = c.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=12)
    after = worker_metrics(s, requests=n0 + 2)
    # Turn 1's prompt is the start of turn 2's: all its full blocks are cached.
    full1 = r1.usage.prompt_tokens // 16 * 16
    assert r2.usage.prompt_tokens_details.cached_tokens >= full1, (r1.usage, r2.usage)
    worker = first[0]
    assert after["requests"][worker] == mid["requests"][worker] + 1, (mid, after)
    gained = after["cached_prompt_tokens"][worker] - mid["cached_prompt_tokens"].get(worker, 0)
    assert gained == r2.usage.prompt_tokens_details.cached_tokens, (mid, after, r2.usage)
    for other in after["requests"]:  # the other worker did nothing meanwhile
        if other != worker:
            assert after["requests"][other] == mid["requests"].get(other, 0), (mid, after)


def test_repeated_long_prompt_comes_from_the_cache(router_graph):
    """(c) through HTTP: the same long prompt again reports cached_tokens of
    at least 90% of its full blocks, and the engine prefilled only the rest
    (its prompt-token counter minus its cached one grew by that)."""
    s = router_graph
    prompt = ("The old harbour town kept its lighthouse burning through every winter storm, "
              "and the keepers wrote the weather in a book. ") * 12
    r1 = s.client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=2)
    n = r1.usage.prompt_tokens
    assert n > 250, r1.usage
    before = worker_metrics(s)
    r2 = s.client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=2)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    print(f"prompt {n} tokens, cached the second time: {cached}")
    assert cached >= 0.9 * (n // 16 * 16), r2.usage
    assert r2.choices[0].text == r1.choices[0].text
    after = worker_metrics(s, requests=sum(before["requests"].values()) + 1)
    computed = {i: (after["prompt_tokens"][i] - after["cached_prompt_tokens"][i])
                - (before["prompt_tokens"].get(i, 0) - before["cached_prompt_tokens"].get(i, 0))
                for i in after["prompt_tokens"]}
    assert sorted(computed.values()) == [0, n - cached], computed


def test_logprobs_of_the_real_model(router_graph):
    """logprobs=True through the graph: one entry per token, the alternatives
    ranked, the greedy token the most likely, and the first entry's token
    is how the streamed text starts; the same numbers streamed and not."""
    c = router_graph.client
    r = c.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=8,
                                  logprobs=True, top_logprobs=5)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for e in content:
        ranked = [t.logprob for t in e.top_logprobs]
        assert len(ranked) == 5 and ranked == sorted(ranked, reverse=True), e
        assert all(x <= 0 for x in ranked)
        assert e.top_logprobs[0].token == e.token  # greedy: the most likely
        assert abs(e.top_logprobs[0].logprob - e.logprob) < 1e-9
        assert e.token == bytes(e.bytes).decode("utf-8", "replace")
    stream = c.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0,
                                       max_tokens=8, logprobs=True, top_logprobs=5, stream=True)
    text, streamed = "", []
    for ch in stream:
        if ch.choices:
            text += ch.choices[0].delta.content or ""
            if ch.choices[0].logprobs:
                streamed += ch.choices[0].logprobs.content
    assert streamed and text.startswith(streamed[0].token), (text, streamed[0])
    assert text == r.choices[0].message.content
    assert [e.token for e in streamed] == [e.token for e in content]
    assert all(abs(a.logprob - b.logprob) < 1e-3 for a, b in zip(streamed, content))

    r = c.completions.create(model=MODEL, prompt="The capital of France is", temperature=0,
                             max_tokens=4, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and "".join(lp.tokens) == r.choices[0].text
    assert all(lp.top_logprobs[k][lp.tokens[k]] == lp.token_logprobs[k] for k in range(4))


def agree(got, ref):
    """None when the tokens `got` agree with the uninterrupted run `ref` (a
    completion's logprobs, top 2): equal, or first differing where ref's top
    two log-probabilities are within 0.1; else what differs."""
    if got == ref.tokens:
        return None
    k = next((k for k, (a, b) in enumerate(zip(got, ref.tokens)) if a != b), None)
    if k is None:
        return f"one is a prefix of the other: {got} / {ref.tokens}"
    top = sorted(ref.top_logprobs[k].values(), reverse=True)
    if len(top) >= 2 and top[0] - top[1] <= 0.1:
        return None
    return f"token {k}: {got[k]!r} instead of {ref.tokens[k]!r}, top two {ref.top_logprobs[k]}"


def test_streams_migrate_when_a_worker_dies_and_agree(served):
    """Issue 14 with the real model: 6 greedy streams on agg_router_llama's
    two workers; once every stream is under way, the worker holding the
    most of them is killed (kill -9). The Processor moves each broken stream
    to the other worker with its tokens so far: every stream completes with
    no error, and its text agrees with the same request run uninterrupted."""
    import concurrent.futures
    base = free_port_run(5)
    s = served("agg_router", "agg_router_llama", "--health-port", str(base), workers=2)
    s.health = [base + i for i in range(5)]
    c = s.client
    n_tok = 40
    # Prompts the model continues confidently (no near-tie in 40 greedy
    # tokens), so that a token lost or repeated by the move shows. Free text
    # would not do: on this CPU, llama.cpp's batched and cached runs move
    # log-probabilities by up to 0.2 (llama-server -np 6 too), so a story
    # run next to others flips tokens whose top two are 0.2 apart without
    # any migration.
    prompts = ["1, 2, 3, 4, 5,", "10, 20, 30, 40,", "2, 4, 6, 8, 10,", "5, 10, 15, 20,",
               "11, 12, 13, 14,", "20, 21, 22, 23,"]
    ref = []
    for p in prompts:  # uninterrupted, one at a time
        r = c.completions.create(model=MODEL, prompt=p, temperature=0, max_tokens=n_tok,
                                 logprobs=2)
        assert r.usage.completion_tokens == n_tok, (p, r.choices[0].text)
        ref.append(r.choices[0].logprobs)
    before = worker_metrics(s)
    started, results = set(), {}

    def one(i):
        stream = c.completions.create(model=MODEL, prompt=prompts[i], temperature=0,
                                      max_tokens=n_tok, logprobs=1, stream=True,
                                      stream_options={"include_usage": True})
        tokens, text, usage = [], "", None
        for ch in stream:
            if ch.usage:
                usage = ch.usage
            if ch.choices:
                text += ch.choices[0].text
                if ch.choices[0].logprobs:
                    tokens += ch.choices[0].logprobs.tokens
                if len(tokens) >= 2:
                    started.add(i)
        results[i] = (text, tokens, usage)

    workers = {f"{iid:016x}": pid for iid, pid in worker_instances(s).values()}
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        futures = [pool.submit(one, i) for i in range(len(prompts))]
        deadline = time.time() + 30
        while len(started) < len(prompts) and time.time() < deadline:
            time.sleep(0.005)
        now = worker_metrics(s)
        busiest = max(now["requests"], key=lambda i: now["requests"][i] - before["requests"][i])
        assert len(started) == len(prompts) and not results, (started, results)  # mid-stream
        os.kill(workers[busiest], signal.SIGKILL)
        for f in futures:
            f.result(timeout=120)  # raises if a client saw an error
    out = s.output()
    assert "migrating it" in out, out
    for i, (text, tokens, usage) in results.items():
        assert usage.completion_tokens == n_tok, (i, usage)
        assert "".join(tokens) == text, (i, tokens, text)
        assert agree(tokens, ref[i]) is None, (i, agree(tokens, ref[i]), text)
    print(f"{out.count('migrating it')} stream(s) migrated; every text agrees")


def test_client_disconnect_frees_the_cells(served):
    s = served("agg", "agg_llama")
    seen = []

    async def scenario():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        rt.subscribe("namespace.dynamo.component.Worker.load_metrics",
                     lambda subject, data: seen.append((time.monotonic(), json.loads(data))))
        sock, _ = start_stream(s.port, 2000, model="smollm2-135m", content="write a long story",
                               events=5)
        await asyncio.sleep(0.3)
        assert any(m["active_slots"] == 1 and m["kv_blocks_used"] > 0 for _, m in seen), seen[-3:]
        sock.close()
        closed = time.monotonic()
        deadline = closed + 5.0
        while time.monotonic() < deadline:
            if any(t > closed and m["active_slots"] == 0 and m["kv_blocks_used"] == 0
                   for t, m in seen):
                break
            await asyncio.sleep(0.02)
        freed = [m for t, m in seen if t > closed and m["active_slots"] == 0]
        assert freed and freed[-1]["kv_blocks_used"] == 0, seen[-3:]
        before = seen[-1][1]["generated_tokens"]
        await asyncio.sleep(1.2)  # metrics go out at least every second
        assert seen[-1][1]["generated_tokens"] == before < 2000
        rt.close()

    asyncio.run(scenario())


def test_prompt_longer_than_the_context_is_a_400_naming_the_limit(served):
    s = served("agg", "agg_llama", "--Worker.max-model-len=64")
    with pytest.raises(openai.BadRequestError) as e:
        s.client.completions.create(model="smollm2-135m", prompt="word " * 200, max_tokens=4)
    assert "at most 64" in str(e.value), str(e.value)
    # A prompt that fits is answered.
    r = s.client.completions.create(model="smollm2-135m", prompt="Hello", max_tokens=4)
    assert r.usage.completion_tokens >= 1


def test_a_missing_model_stops_the_graph_naming_the_file():
    port = free_port()
    s = Serve([f"{GRAPHS}/agg.py:Frontend", "-f", f"{CONFIGS}/agg_llama.yaml",
               f"--Frontend.port={port}", "--Worker.model-path=/nonexistent/dir/missing.gguf"],
              env_for_tests(DYN_LOG="info"))
    try:
        rc = s.proc.wait(timeout=90)
    except Exception:
        s.proc.kill()
        raise AssertionError("dynamo serve kept running: " + s.output())
    out = s.output()
    assert rc != 0, out
    assert "/nonexistent/dir/missing.gguf" in out and "No such file" in out, out
    assert "keeps crashing" in out, out
