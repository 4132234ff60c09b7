"""The LLM graphs of examples/llm served by `dynamo serve`, end to end:
OpenAI conformance through the real Processor and engine (the official
openai client), KV-aware routing to the worker holding a prompt's prefix,
a dead worker's blocks leaving the index, and a client disconnect
cancelling the engine's work."""

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import BUILD, Serve, env_for_tests  # noqa: E402

import openai  # noqa: E402  (scripts/deps.sh installs it)

from dynamo.runtime import DistributedRuntime  # noqa: E402

GRAPHS = ROOT / "examples" / "llm" / "graphs"
CONFIGS = ROOT / "examples" / "llm" / "configs"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def graph():
    started = []

    def start(name, *overrides, workers=2):
        port = free_port()
        s = Serve([f"{GRAPHS}/{name}.py:Frontend", "-f", f"{CONFIGS}/{name}.yaml",
                   f"--Frontend.port={port}", f"--Worker.ServiceArgs.workers={workers}",
                   *overrides], env_for_tests(DYN_LOG="info"))  # the services' INFO lines
        started.append(s)
        s.port = port
        s.wait_for("Frontend ready")
        s.wait_for("Processor ready")
        s.wait_for("Worker ready", count=workers)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        deadline = time.time() + 20
        while True:  # /health turns 200 once the Frontend sees a worker
            try:
                client.models.list()
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health").status == 200:
                    break
            except Exception:
                pass
            assert time.time() < deadline, s.output()
            time.sleep(0.05)
        s.client = client
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            assert s.stop() == 0, s.output()
        # Under an ASan build (DYN_BIN, DYN_LLM_LIB) every worker reports here.
        assert "Sanitizer" not in s.output(), s.output()


# ---- OpenAI conformance through the whole graph ------------------------------

@pytest.mark.parametrize("name", ["agg", "agg_router"])
def test_openai_client_through_the_graph(graph, name):
    s = graph(name)
    c = s.client
    assert [m.id for m in c.models.list().data] == ["dynamo-sim"]

    r = c.chat.completions.create(model="dynamo-sim", max_tokens=8,
                                  messages=[{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Tell me about the weather"}])
    assert r.object == "chat.completion" and r.model == "dynamo-sim"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8

    chunks = list(c.chat.completions.create(
        model="dynamo-sim", max_tokens=6, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Tell me about the weather"}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({ch.id for ch in chunks}) == 1
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text

    r = c.completions.create(model="dynamo-sim", prompt="Once upon a time", max_tokens=5)
    assert r.object == "text_completion" and r.choices[0].text and r.usage.completion_tokens == 5
    pieces = list(c.completions.create(model="dynamo-sim", prompt="Once upon a time",
                                       max_tokens=5, stream=True))
    assert "".join(p.choices[0].text for p in pieces if p.choices)

    # Errors, as OpenAI sends them.
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:  # over the context length (Processor)
        c.completions.create(model="dynamo-sim", prompt="word " * 100, max_tokens=9000)
    assert "maximum context length" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="dynamo-sim", messages=[{"role": "wizard", "content": "x"}])

    # A stop string ends the answer early, without the stop string itself.
    full = c.completions.create(model="dynamo-sim", prompt="abc", max_tokens=20, seed=7,
                                temperature=0.0).choices[0].text
    stop = full[5:8]
    cut = c.completions.create(model="dynamo-sim", prompt="abc", max_tokens=20, seed=7,
                               temperature=0.0, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.text == full[:full.index(stop)]


def test_logprobs_through_the_graph(graph):
    """logprobs as OpenAI returns them, from the simulated engine, through
    the official client: one entry per generated token, stream and not, chat
    and completions; each token's bytes are what it decodes to, its top
    alternatives are ranked, and the token itself is the most likely (the
    simulated model's rule)."""
    s = graph("agg", workers=1)
    c = s.client
    msgs = [{"role": "user", "content": "Tell me about the weather"}]
    r = c.chat.completions.create(model="dynamo-sim", messages=msgs, max_tokens=6, seed=3,
                                  temperature=0.0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    for e in content:
        assert e.logprob < 0 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs),
                                                            reverse=True)
        assert e.token == bytes(e.bytes).decode("utf-8", "replace")
    # The answer is the tokens' bytes put together (no special token here:
    # the simulated engine draws ids below the tokenizer's added tokens).
    joined = b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace")
    assert joined == r.choices[0].message.content

    chunks = list(c.chat.completions.create(model="dynamo-sim", messages=msgs, max_tokens=6,
                                            seed=3, temperature=0.0, logprobs=True,
                                            top_logprobs=3, stream=True))
    streamed = [e for ch in chunks if ch.choices and ch.choices[0].logprobs
                for e in ch.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]

    r = c.chat.completions.create(model="dynamo-sim", messages=msgs, max_tokens=3)
    assert r.choices[0].logprobs is None  # not asked for

    r = c.completions.create(model="dynamo-sim", prompt="Once upon a time", max_tokens=5,
                             logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)

    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="dynamo-sim", messages=msgs, logprobs=True,
                                  top_logprobs=21)
    assert "top_logprobs" in str(e.value)


def free_port_run(n):
    """n free ports in a row, below the ephemeral range."""
    import random
    for _ in range(200):
        base = random.randrange(20000, 32000)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} free ports in a row")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def sample(text, name, **labels):
    """The sum of the samples of name whose labels include these."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
            found = True
    assert found, f"{name} {labels} not in:\n{text}"
    return total


def test_every_worker_serves_prometheus_metrics(graph):
    """Each LLM worker's health port serves /metrics: the engine's load and
    counters on the Workers, routing decisions on the Router, tokenizing
    time on the Processor, each labelled with namespace, component and
    instance; the numbers follow the requests that ran."""
    base = free_port_run(5)  # Frontend, Processor, Router, 2 Workers
    s = graph("agg_router", "--health-port", str(base))
    generated = 0
    for i in range(3):
        r = s.client.completions.create(model="dynamo-sim", prompt="The same long prompt " * 8,
                                        max_tokens=4)
        generated += r.usage.completion_tokens
    # Workers update their metrics with the load they publish (every
    # metrics-interval-ms): wait for the last request's.
    deadline = time.time() + 5
    while True:
        text = "".join(scrape(base + i) for i in range(5))
        got = sample(text, "dynamo_engine_generated_tokens_total", component="Worker")
        if got == generated or time.time() > deadline:
            break
        time.sleep(0.05)
    assert got == generated
    assert sample(text, "dynamo_engine_requests_total", component="Worker") == 3
    assert sample(text, "dynamo_engine_prompt_tokens_total", namespace="dynamo") > 0
    # The same prompt went to the worker holding it: the cache served it.
    assert sample(text, "dynamo_engine_cached_prompt_tokens_total", component="Worker") > 0
    assert sample(text, "dynamo_engine_kv_blocks_total") > 0
    assert sample(text, "dynamo_engine_step_seconds_count", component="Worker") > 0
    assert sample(text, "dynamo_router_decisions_total", component="Router") == 3
    assert sample(text, "dynamo_router_overlap_blocks_count") == 3
    assert sample(text, "dynamo_router_index_blocks") > 0
    assert sample(text, "dynamo_processor_tokenize_seconds_count", component="Processor") == 3
    assert sample(text, "dynamo_processor_detokenize_seconds_count") >= 3
    assert "# TYPE dynamo_engine_generated_tokens_total counter" in text
    assert 'instance="' in text
    # The request plane, per endpoint of every worker.
    for comp in ("Processor", "Router", "Worker"):
        assert sample(text, "dynamo_endpoint_requests_total", component=comp,
                      endpoint="generate") == 3
        assert sample(text, "dynamo_endpoint_errors_total", component=comp) == 0
        assert sample(text, "dynamo_endpoint_inflight_requests", component=comp) == 0
        assert sample(text, "dynamo_endpoint_received_bytes_total", component=comp) > 0
        assert sample(text, "dynamo_endpoint_sent_bytes_total", component=comp) > 0


# ---- KV-aware routing ----------------------------------------------------------

def service_pids(s, name):
    """Worker index -> pid of each `name` worker this serve started."""
    pids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if (f"DYN_SERVICE_NAME={name}".encode() in env
                and f"DYN_SUPERVISOR_PID={s.proc.pid}".encode() in env):
            idx = [e for e in env if e.startswith(b"DYN_WORKER_INDEX=")][0].split(b"=")[1]
            pids[int(idx)] = int(d)
    return pids


def worker_instances(s):
    """Worker index -> (instance id, pid), from the log and /proc."""
    inst = {int(i): int(h, 16)
            for i, h in re.findall(r"Worker (\d+): .* instance ([0-9a-f]+)", s.output())}
    pids = service_pids(s, "Worker")
    return {i: (inst[i], pids.get(i)) for i in inst}


async def collect(stream):
    return [json.loads(m) async for m in stream]


def test_router_sends_prefix_to_its_worker_and_forgets_dead_workers(graph):
    s = graph("agg_router", workers=3)
    workers = worker_instances(s)
    assert len(workers) == 3

    async def scenario():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        engine = await rt.namespace("dynamo").component("Worker").endpoint("generate").client()
        router = await rt.namespace("dynamo").component("Router").endpoint("generate").client()
        await engine.wait_for_instances(3, timeout=10)
        await router.wait_for_instances(1, timeout=10)
        # Each worker gets its own 200-token prompt (12 full blocks of 16).
        prompts = {i: [1000 + 300 * i + k for k in range(200)] for i in workers}
        for i, (iid, _) in workers.items():
            body = json.dumps({"token_ids": prompts[i], "max_tokens": 1}).encode()
            await collect(engine.direct(body, iid))

        async def ask(tokens):
            msgs = await collect(router.generate(json.dumps({"token_ids": tokens}).encode()))
            return int(msgs[0]["worker_id"], 16), msgs[0]["overlap_blocks"]

        # KV events travel over the bus: wait until the index has them.
        deadline = time.time() + 5
        while True:
            answers = {i: await ask(prompts[i] + [7, 8, 9]) for i in workers}
            if all(answers[i] == (workers[i][0], 12) for i in workers) or time.time() > deadline:
                break
            await asyncio.sleep(0.05)
        for i in workers:  # every continuation goes to the worker holding its prefix
            assert answers[i] == (workers[i][0], 12), (i, answers, workers)

        # kill -9 worker 1: its instance leaves and its blocks leave the index.
        dead_iid, dead_pid = workers[1]
        os.kill(dead_pid, signal.SIGKILL)
        s.wait_for("left; its blocks are out of the index", timeout=10)
        wid, overlap = await ask(prompts[1] + [7, 8, 9])
        assert wid != dead_iid and overlap == 0
        # The survivors' prefixes are still routed to them.
        assert await ask(prompts[0] + [1]) == (workers[0][0], 12)
        rt.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM with a short drain"])
def test_no_stream_is_lost_when_a_worker_dies(graph, how):
    """20 concurrent streams on two workers; one worker is killed (or told to
    stop with a 0.5 s drain, shorter than the streams) mid-stream. The
    Processor migrates the broken streams to the other worker: every client
    gets one unbroken stream of exactly max_tokens tokens (counted by their
    logprobs entries, whose bytes put together are the streamed text, so no
    token is repeated or missing), one usage, no error; and the migrations
    show in the Processor's metrics."""
    import concurrent.futures
    base = free_port_run(5)
    s = graph("agg_router", "--health-port", str(base), "--grace", "1")
    n_tok, started, results = 150, [], {}

    def one(i):
        stream = s.client.chat.completions.create(
            model="dynamo-sim", max_tokens=n_tok, stream=True, logprobs=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            messages=[{"role": "user", "content": f"Tell me story number {i}"}])
        text, entries, usage, chunks = "", [], None, 0
        for ch in stream:
            if ch.usage:
                usage = ch.usage
            if ch.choices:
                chunks += 1
                if chunks == 5:
                    started.append(i)
                text += ch.choices[0].delta.content or ""
                if ch.choices[0].logprobs:
                    entries += ch.choices[0].logprobs.content
        results[i] = (text, entries, usage)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(one, i) for i in range(20)]
        deadline = time.time() + 20
        while len(started) < 20 and time.time() < deadline:
            time.sleep(0.01)
        victim = service_pids(s, "Worker")[0]
        os.kill(victim, signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
        for f in futures:
            f.result(timeout=60)  # raises if a client saw an error
    assert len(results) == 20
    for i, (text, entries, usage) in results.items():
        assert usage.completion_tokens == n_tok, (i, usage)
        assert len(entries) == n_tok, (i, len(entries))
        assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8", "replace") == text
    metrics = "".join(scrape(base + i) for i in range(5))
    assert sample(metrics, "dynamo_processor_migrations_total", component="Processor") >= 1
    assert "migrating it" in s.output()


def test_router_forgets_predicted_blocks_the_worker_never_stores(graph):
    # The Router credits the chosen worker with a prompt's blocks at once;
    # if the worker never stores them (here: nobody sends it the request),
    # the guess leaves the index after prediction-ttl-ms.
    s = graph("agg_router", "--Router.prediction-ttl-ms=400", workers=2)

    async def scenario():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        router = await rt.namespace("dynamo").component("Router").endpoint("generate").client()
        await router.wait_for_instances(1, timeout=10)

        async def ask(tokens):
            msgs = await collect(router.generate(json.dumps({"token_ids": tokens}).encode()))
            return int(msgs[0]["worker_id"], 16), msgs[0]["overlap_blocks"]

        prompt = [2000 + k for k in range(160)]  # 10 blocks
        first, overlap = await ask(prompt)
        assert overlap == 0
        again = await ask(prompt + [1])
        assert again == (first, 10)  # predicted: the burst follows the first
        await asyncio.sleep(1.0)
        assert (await ask(prompt + [2]))[1] == 0  # never stored: forgotten
        rt.close()

    asyncio.run(scenario())
    s.wait_for("predicted block(s) never stored")


def test_kv_routing_reuses_the_cache_for_a_multi_turn_conversation(graph):
    s = graph("agg_router", workers=3)
    c = s.client
    messages = [{"role": "system", "content": "You are a helpful assistant. " * 20}]
    cached = []
    for turn in range(4):
        messages.append({"role": "user", "content": f"question number {turn} about the order"})
        r = c.chat.completions.create(model="dynamo-sim", messages=messages, max_tokens=8, seed=turn)
        cached.append(r.usage.prompt_tokens_details.cached_tokens)
        messages.append({"role": "assistant", "content": r.choices[0].message.content})
    # Turn 1 is new; every later turn lands where the conversation's blocks are.
    assert cached[0] == 0 and all(x > 0 for x in cached[1:]), cached


# ---- cancellation ---------------------------------------------------------------

def test_client_disconnect_cancels_the_engine_request(graph):
    s = graph("agg", "--Worker.speedup=1.0", workers=1)
    seen = []

    async def scenario():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        rt.subscribe("namespace.dynamo.component.Worker.load_metrics",
                     lambda subject, data: seen.append((time.monotonic(), json.loads(data))))
        # A long answer: 4,000 tokens at >= 8 ms a step is over 30 s.
        sock, _ = start_stream(s.port, 4000, content="write a long story", events=5)
        await asyncio.sleep(0.2)
        assert any(m["active_slots"] == 1 for _, m in seen), seen[-3:]
        sock.close()
        closed = time.monotonic()
        deadline = closed + 2.0
        while time.monotonic() < deadline:
            if any(t > closed and m["active_slots"] == 0 and m["waiting"] == 0 for t, m in seen):
                break
            await asyncio.sleep(0.02)
        idle = [t - closed for t, m in seen if t > closed and m["active_slots"] == 0]
        assert idle and idle[0] < 1.0, f"the engine still ran the request: {seen[-3:]}"
        # And it stays stopped: no token is generated afterwards.
        await asyncio.sleep(0.3)
        before = seen[-1][1]["generated_tokens"]
        await asyncio.sleep(1.2)  # metrics go out at least every second
        assert seen[-1][1]["generated_tokens"] == before < 4000
        rt.close()

    asyncio.run(scenario())
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics").read().decode()
    assert re.search(r'dynamo_frontend_requests_total\{[^}]*status="cancelled"[^}]*\} 1', metrics), metrics


def test_stop_strings_cut_at_the_earliest_and_never_lose_text(graph):
    # The engine may emit the template's end-of-turn token (<|eot_id|>,
    # among ids 3074..3078 of the example tokenizer) when its vocabulary
    # reaches it; ids from 3000 make that likely within a short answer.
    s = graph("agg", "--Worker.vocab-size=3079", "--Worker.min-token-id=3000", workers=1)
    c = s.client

    def complete(seed, **kw):
        return c.completions.create(model="dynamo-sim", prompt="hello", max_tokens=200,
                                    seed=seed, **kw).choices[0]

    ended = [(seed, complete(seed)) for seed in range(1, 30)]
    by_eot = [(seed, ch) for seed, ch in ended if ch.finish_reason == "stop" and len(ch.text) > 12]
    assert by_eot, [ch.finish_reason for _, ch in ended]
    seed, full = by_eot[0]
    # A stop string that never matches must not change an answer that ended
    # on the end-of-turn token (the look-behind text was once dropped).
    assert complete(seed, stop=["@@@@@@@@"]).text == full.text
    # Of several stop strings the earliest in the text wins, whatever the
    # order of the list.
    text = full.text
    firsts = [i for i in range(len(text) - 1) if text.index(text[i:i + 2]) == i]
    i, k = firsts[1], firsts[-1]  # two 2-char pieces, each first seen there
    a, b = text[i:i + 2], text[k:k + 2]
    for stops in ([b, a], [a, b]):
        cut = complete(seed, stop=stops)
        assert cut.finish_reason == "stop" and cut.text == text[:i], (stops, cut.text, text)


def start_stream(port, max_tokens, model="dynamo-sim", content="go on", events=3):
    """A raw streamed chat request (ignore_eos), on a socket the test can
    close or read on; returns the socket and its first `events` chunks."""
    body = json.dumps({"model": model, "stream": True, "max_tokens": max_tokens,
                       "ignore_eos": True, "messages": [{"role": "user", "content": content}]})
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                  + body).encode())
    got = b""
    while got.count(b"data: ") < events:
        got += sock.recv(65536)
    return sock, got


def read_to_done(sock, got):
    while b"data: [DONE]" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"the stream was cut off: {got[-300:]!r}"
        got += chunk
    return got


def test_sigterm_lets_streams_in_flight_finish(graph):
    # A rolling restart: SIGTERM to `dynamo serve` while an answer streams.
    # Every service drains (the Frontend counts the HTTP requests it relays
    # as work in flight), so the answer completes within the grace period.
    s = graph("agg", workers=1)
    sock, got = start_stream(s.port, 120)
    s.proc.send_signal(signal.SIGTERM)
    # Health turns 503 at once: "draining" once the Frontend got the signal,
    # or no live worker if the Worker deregistered first (every process gets
    # SIGTERM at the same time).
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{s.port}/health", timeout=2)
        except urllib.error.HTTPError as e:
            assert e.code == 503
            break
        except OSError:
            break
        time.sleep(0.02)
    got = read_to_done(sock, got)
    events = [json.loads(line[6:]) for line in got.decode().split("\n")
              if line.startswith("data: {")]
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(1 for e in events if e["choices"] and e["choices"][0]["delta"].get("content")) == 120
    assert s.proc.wait(20) == 0


def test_oversized_prompt_is_refused_before_tokenizing(graph):
    # A prompt longer than the context could hold even in the longest
    # tokens is refused at once, without holding the Processor's loop.
    s = graph("agg", "--Processor.context-length=64", workers=1)
    with pytest.raises(openai.BadRequestError) as e:
        s.client.completions.create(model="dynamo-sim", prompt="x" * 200_000, max_tokens=4)
    assert "bytes" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        s.client.completions.create(model="dynamo-sim", prompt="hi", max_tokens=100)
    assert "maximum context length" in str(e.value)
    assert s.client.completions.create(model="dynamo-sim", prompt="hi",
                                       max_tokens=4).usage.completion_tokens == 4


def test_a_draining_frontend_refuses_new_work_and_finishes_the_old(graph):
    # SIGTERM to the Frontend alone (as Kubernetes stops one pod): its
    # streams in flight finish, while /health and new requests get 503.
    s = graph("agg", workers=1)
    sock, got = start_stream(s.port, 120)
    os.kill(service_pids(s, "Frontend")[0], signal.SIGTERM)
    time.sleep(0.1)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{s.port}/health", timeout=5)
    assert e.value.code == 503 and b"draining" in e.value.read()
    with pytest.raises(openai.APIStatusError) as e:
        s.client.with_options(max_retries=0).chat.completions.create(
            model="dynamo-sim", max_tokens=2, messages=[{"role": "user", "content": "late"}])
    assert e.value.status_code == 503 and "shutting down" in str(e.value)
    got = read_to_done(sock, got)
    assert got.count(b'"content":') >= 120


# ---- services that cannot start ------------------------------------------------

def test_services_that_cannot_start_free_what_they_allocated(tmp_path):
    # Processor, Router and Worker each fail their start on a bad config,
    # the first two at the last step, with everything else allocated. Under
    # the ASan build (make test-asan) each failed worker exits through
    # LeakSanitizer, which must find nothing.
    # Without a Worker edge, the Processor and the Router fail last.
    (tmp_path / "no_worker.py").write_text(
        "from dynamo.llm import Frontend, Processor, Router\n"
        "Frontend.link(Processor).link(Router)\n")
    (tmp_path / "lone_router.py").write_text(
        "from dynamo.llm import library_path\n"
        "from dynamo.sdk.service import c_service\n"
        "Router = c_service(library_path(), 'Router', endpoints={'generate': False})\n")
    (tmp_path / "router.yaml").write_text("Router:\n  mode: kv\n")
    cases = [
        ([f"{tmp_path}/no_worker.py:Frontend", "-f", f"{CONFIGS}/agg_router.yaml",
          f"--Processor.tokenizer={GRAPHS}/tokenizer.json"],
         {"Processor": "Processor: no client for Worker/generate"}),
        ([f"{tmp_path}/lone_router.py:Router", "-f", f"{tmp_path}/router.yaml"],
         {"Router": "Router: cannot start: no client for Worker/generate"}),
        ([f"{GRAPHS}/agg.py:Frontend", "-f", f"{CONFIGS}/agg.yaml",
          "--Processor.chat-template=nope", "--Worker.min-token-id=5000"],
         {"Processor": "Processor: config key 'chat-template' must be one of the built-in "
                       "families: plain llama3 chatml mistral gemma phi3, not \"nope\"",
          # The engine refuses it, with the Worker allocated (a value of the
          # wrong type fails before: test_llm_config.py).
          "Worker": "Worker: engine config: engine options: vocab_size leaves no token id "
                    "above min_token_id besides EOS"}),
    ]
    for args, failures in cases:
        port = [f"--Frontend.port={free_port()}"] if args[0].endswith(":Frontend") else []
        s = Serve([*args, *port], env_for_tests())
        try:
            for name, why in failures.items():
                s.wait_for(why)
                # Restarted once: the first attempt's output is all in.
                s.wait_for(f"error: {name}: on_start failed", count=2)
        finally:
            s.stop()
        out = s.output()
        assert "Sanitizer" not in out, out


# ---- Prometheus --------------------------------------------------------------

def test_a_real_prometheus_scrapes_every_worker(graph, tmp_path):
    """Debian's prometheus (scripts/deps.sh installs it), started here on
    loopback, scrapes a served agg_router graph: every worker's health port
    and the Frontend. After some load its HTTP API gives a non-zero rate over
    the engines' token counter and the Frontend's TTFT histogram, and every
    metric the Grafana dashboard (deploy/grafana/dynamo.json) queries is in
    the scrape."""
    import shutil
    import subprocess
    prom = shutil.which("prometheus")
    assert prom, "prometheus is not installed (scripts/deps.sh installs Debian's package)"
    base = free_port_run(5)
    s = graph("agg_router", "--health-port", str(base))
    targets = [f"127.0.0.1:{base + i}" for i in range(5)] + [f"127.0.0.1:{s.port}"]
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: dynamo\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n")
    port = free_port()
    proc = subprocess.Popen(
        [prom, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def query(q):
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=5) as r:
                res = json.loads(r.read())["data"]["result"]
            return float(res[0]["value"][1]) if res else 0.0

        def up():
            try:
                return query("count(up == 1)")
            except (OSError, KeyError, ValueError):
                return 0.0

        deadline = time.time() + 30
        while up() < len(targets):
            assert time.time() < deadline, "prometheus did not scrape every target"
            time.sleep(0.25)
        for i in range(12):
            list(s.client.chat.completions.create(
                model="dynamo-sim", max_tokens=8, stream=True,
                messages=[{"role": "user", "content": f"Question {i % 3}"}]))
            time.sleep(0.2)
        tokens = ttft = 0.0
        deadline = time.time() + 20
        while (tokens <= 0 or ttft <= 0) and time.time() < deadline:
            time.sleep(0.5)
            tokens = query("sum(rate(dynamo_engine_generated_tokens_total[10s]))")
            ttft = query("sum(rate(dynamo_frontend_time_to_first_token_seconds_count[10s]))")
        assert tokens > 0 and ttft > 0, (tokens, ttft)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/label/__name__/values",
                                    timeout=5) as r:
            scraped = set(json.loads(r.read())["data"])
        dash = json.loads((ROOT / "deploy" / "grafana" / "dynamo.json").read_text())
        used = {m for p in dash["panels"] for t in p["targets"]
                for m in re.findall(r"\bdynamo_[a-z_]+", t["expr"])}
        assert used and not used - scraped, f"not scraped: {sorted(used - scraped)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
