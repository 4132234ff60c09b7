"""The llama.cpp engine served by `dynamo serve` (examples/llm/configs/
*_llama.yaml, SmolLM2-135M, which scripts/deps.sh fetches):

(d) the Router sends a continuation to the worker whose real KV cache holds
    its prefix, from the engine's KV events;
(e) a client that disconnects frees the sequence's cells;
(f) a prompt longer than the model's context gets a 400 naming the limit;
(g) a missing .gguf makes the worker exit with an error naming the file,
    and `dynamo serve` reports it and stops instead of hanging.

These talk to the Worker and Router with token ids, so they do not depend
on the Processor's tokenizer: the graphs are started with the example
tokenizer.json (its ids are valid SmolLM2 ids), which also works where the
Processor reads the .gguf itself."""

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from test_llm_graph import GRAPHS, CONFIGS, collect, free_port, worker_instances  # noqa: E402
from conftest import Serve, env_for_tests  # noqa: E402

from dynamo.runtime import DistributedRuntime  # noqa: E402

TOKENIZER = f"--Processor.tokenizer={GRAPHS}/tokenizer.json"


def start(graph, config, *overrides, workers=1):
    port = free_port()
    s = Serve([f"{GRAPHS}/{graph}.py:Frontend", "-f", f"{CONFIGS}/{config}.yaml",
               f"--Frontend.port={port}", f"--Worker.ServiceArgs.workers={workers}",
               "--Worker.threads=1", "--Worker.num-blocks=128", TOKENIZER, *overrides],
              env_for_tests(DYN_LOG="info"))
    s.port = port
    s.wait_for("Frontend ready", timeout=60)
    s.wait_for("Worker ready", count=workers, timeout=60)
    s.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    return s


@pytest.fixture
def served():
    started = []

    def go(*args, **kw):
        s = start(*args, **kw)
        started.append(s)
        return s

    yield go
    for s in started:
        if s.proc.poll() is None:
            assert s.stop() == 0, s.output()
        assert "Sanitizer" not in s.output(), s.output()


def test_router_follows_the_real_engines_kv_events(served):
    s = served("agg_router", "agg_router_llama", workers=2)
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


def test_client_disconnect_frees_the_cells(served):
    s = served("agg", "agg_llama")
    seen = []

    async def scenario():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        rt.subscribe("namespace.dynamo.component.Worker.load_metrics",
                     lambda subject, data: seen.append((time.monotonic(), json.loads(data))))
        body = json.dumps({"model": "smollm2-135m", "stream": True, "max_tokens": 2000,
                           "ignore_eos": True,
                           "messages": [{"role": "user", "content": "write a long story"}]})
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                      + body).encode())
        got = b""
        while got.count(b"data: ") < 5:
            got += await asyncio.get_running_loop().sock_recv(sock, 65536)
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
               f"--Frontend.port={port}", "--Worker.model-path=/nonexistent/dir/missing.gguf",
               TOKENIZER], env_for_tests(DYN_LOG="info"))
    try:
        rc = s.proc.wait(timeout=90)
    except Exception:
        s.proc.kill()
        raise AssertionError("dynamo serve kept running: " + s.output())
    out = s.output()
    assert rc != 0, out
    assert "/nonexistent/dir/missing.gguf" in out and "No such file" in out, out
    assert "keeps crashing" in out, out
