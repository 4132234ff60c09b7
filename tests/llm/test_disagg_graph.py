"""Disaggregated prefill and decode (src/llm/services/disagg.c) served by
`dynamo serve` with the simulated engine (examples/llm/configs/disagg.yaml):

(a) a long prompt is prefilled by the PrefillWorker, a short one locally,
    and the counters on /metrics say so; the KV bytes moved are counted;
(b) max-local-prefill-length changed on the control plane while serving
    sends the long prompt back to local prefill;
(c) a prefill worker killed mid-transfer, or stalled past the timeout:
    the decode worker prefills locally and the answer is whole;
(d) a decode worker killed mid-transfer: the prefill worker frees the
    sequence (its running blocks go back to 0);
(e) engines of another KV layout are refused, naming the field, and the
    request is served by a local prefill;
(f) disagg_router: KV a decode worker imported is in the KV router's index,
    so the prompt's continuation is routed to that worker;
(g) the first token reaches the client before the KV has moved;
(h)-(k) max_tokens 1 moves no KV; two decode workers share the prefill
    worker's queue; a prefill waiting in a busy queue is not a stall, a
    stopped prefill worker is.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from test_llm_graph import (GRAPHS, CONFIGS, free_port, free_port_run,  # noqa: E402
                            sample, scrape, service_pids)
from conftest import Serve, env_for_tests  # noqa: E402

import openai  # noqa: E402

from dynamo.runtime import DistributedRuntime  # noqa: E402

MODEL = "dynamo-sim"
LONG = " ".join(f"w{i}" for i in range(700))   # about 1,400 tokens: over 256
HALF = " ".join(f"w{i}" for i in range(350)) + " " + " ".join(f"x{i}" for i in range(350))
SHORT = "a short prompt"


def fresh(word):
    """A long prompt no cache holds yet."""
    return " ".join(f"{word}{i}" for i in range(700))


def start(graph, *overrides, n_services=4, config=None):
    port = free_port()
    base = free_port_run(n_services + 1)
    s = Serve([f"{GRAPHS}/{graph}.py:Frontend", "-f", f"{CONFIGS}/{config or graph}.yaml",
               f"--Frontend.port={port}", "--health-port", str(base), *overrides],
              env_for_tests(DYN_LOG="info"))
    s.port, s.health = port, list(range(base, base + n_services + 1))
    s.wait_for("Frontend ready", timeout=60)
    if graph.startswith("disagg"):
        s.wait_for("PrefillWorker ready", timeout=60)
        s.wait_for("Worker ready", count=2, timeout=60)  # "Worker ready" and "PrefillWorker ready"
    else:
        s.wait_for("Worker ready", timeout=60)
    s.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    deadline = time.time() + 20
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health").status == 200:
                break
        except Exception:
            pass
        assert time.time() < deadline, s.output()
        time.sleep(0.05)
    return s


def metric(s, name, **labels):
    """The sum of name over every service's /metrics."""
    total = 0.0
    for p in s.health:
        try:
            total += sample(scrape(p), name, **labels)
        except Exception:
            pass
    return total


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
            s.stop()
        assert "Sanitizer" not in s.output(), s.output()


def ask(s, prompt, n=12, stream=False):
    return s.client.completions.create(model=MODEL, prompt=prompt, max_tokens=n,
                                       temperature=0.0, stream=stream,
                                       extra_body={"ignore_eos": True})


def used_blocks(s, component):
    """kv_blocks_used of component's workers, from their load_metrics."""
    async def go():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        seen = {}
        rt.subscribe(f"namespace.dynamo.component.{component}.load_metrics",
                     lambda subj, data: seen.update({json.loads(data)["worker_id"]:
                                                     json.loads(data)["kv_blocks_used"]}))
        await asyncio.sleep(1.3)  # load goes out at least every second
        rt.close()
        return seen
    return asyncio.run(go())


def test_long_prompts_are_prefilled_remotely_short_ones_locally(served):
    s = served("disagg")
    r = ask(s, SHORT)
    assert r.usage.completion_tokens == 12
    assert metric(s, "dynamo_disagg_local_prefills_total") == 1
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 0
    chunks = list(ask(s, LONG, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text and chunks[-1].choices[0].finish_reason == "length"
    first = metric(s, "dynamo_disagg_kv_transfer_bytes_total", component="Worker")
    assert first > 80 * 32768  # ~1,400 tokens: 87 full blocks
    # The same prompt again is in the decode worker's cache: local.
    r = ask(s, LONG)
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 1
    # Half of it shared: remote, and only the blocks the decode worker lacks move.
    r = ask(s, HALF)
    assert r.usage.completion_tokens == 12 and r.usage.prompt_tokens > 1000
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 2
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="PrefillWorker") == 2
    assert metric(s, "dynamo_disagg_prefill_fallbacks_total") == 0
    got = metric(s, "dynamo_disagg_kv_transfer_bytes_total", component="Worker")
    sent = metric(s, "dynamo_disagg_kv_transfer_bytes_total", component="PrefillWorker")
    assert sent == got
    assert 0.3 * first < got - first < 0.7 * first, (first, got)
    assert metric(s, "dynamo_disagg_kv_transfer_seconds_count", component="Worker") == 2
    assert metric(s, "dynamo_disagg_kv_receive_seconds_count", component="Worker") == 2
    assert (metric(s, "dynamo_disagg_kv_receive_seconds_sum", component="Worker")
            <= metric(s, "dynamo_disagg_kv_transfer_seconds_sum", component="Worker"))
    assert metric(s, "dynamo_disagg_prefill_queue_length") == 0
    # (b) the threshold raised on the control plane: the next long prompt stays local.
    put = subprocess.Popen([os.environ["CONTROL_PUT"], s.sock,
                            "config/dynamo/disagg/max-local-prefill-length", "100000", "30"],
                           stdout=subprocess.PIPE)
    try:
        assert put.stdout.readline() == b"put\n"
        s.wait_for("max-local-prefill-length is now 100000", timeout=10)
        ask(s, fresh("y"))
        assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 2
        assert metric(s, "dynamo_disagg_local_prefills_total") == 3
    finally:
        put.kill()
        put.wait()
    # Its session gone, the key is deleted: the config's value again.
    s.wait_for("max-local-prefill-length is now 256", timeout=10)
    ask(s, fresh("z"))
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 3
    assert all(v == 0 for v in used_blocks(s, "Worker").values())
    assert all(v == 0 for v in used_blocks(s, "PrefillWorker").values())


# A slow link (8 MB/s) so that a transfer of ~3 MB takes ~0.4 s and the
# faults land in the middle of it.
SLOW = ["--PrefillWorker.kv-bandwidth-mbps=8", "--Worker.kv-transfer-timeout-ms=1500"]


def first_token_then(s, action):
    """Streams LONG; once the first token is in, runs action; returns the
    answer's text pieces and finish reason."""
    stream = ask(s, LONG, n=20, stream=True)
    pieces, finish = [], None
    for i, c in enumerate(stream):
        if not c.choices:
            continue
        if i == 0:
            action()
        pieces.append(c.choices[0].text)
        finish = c.choices[0].finish_reason or finish
    return pieces, finish


def test_a_worker_with_a_bad_role_does_not_start():
    """`role:` is aggregated or decode on a Worker (prefill is the
    PrefillWorker service's): anything else stops the worker, naming it,
    and dynamo serve gives up on the graph. Both cases at once: each takes
    the supervisor's five restarts (~16 s)."""
    cases = {"bogus": "Worker: config key 'role' must be aggregated, prefill or decode, "
                      'not "bogus"',
             "prefill": "role prefill belongs to the PrefillWorker service"}
    served = {role: Serve([f"{GRAPHS}/disagg.py:Frontend", "-f", f"{CONFIGS}/disagg.yaml",
                           f"--Frontend.port={free_port()}", f"--Worker.role={role}"],
                          env_for_tests())
              for role in cases}
    try:
        for role, s in served.items():
            assert s.proc.wait(timeout=90) == 1
            out = s.output()
            assert cases[role] in out, out
            assert "Worker.0 keeps crashing" in out, out
    finally:
        for s in served.values():
            if s.proc.poll() is None:
                s.stop()


def test_the_first_token_comes_before_the_kv(served):
    """The PrefillWorker's first token is sent on to the client at once,
    not after the KV: on a 4 MB/s link (~2.8 MB, ~0.7 s) the first token
    arrives long before the second, which needs the KV installed."""
    s = served("disagg", "--PrefillWorker.kv-bandwidth-mbps=4")
    ask(s, SHORT)  # warm: connections made
    t0 = time.time()
    times = []
    for c in ask(s, fresh("f"), n=3, stream=True):
        if c.choices and c.choices[0].text:
            times.append(time.time() - t0)
    assert len(times) == 3, times
    moved = metric(s, "dynamo_disagg_kv_transfer_bytes_total", component="Worker")
    assert moved > 2_000_000
    transfer = moved / 4e6
    assert times[1] - times[0] > 0.6 * transfer, (times, transfer)
    assert times[0] < 0.5 * times[1], times


@pytest.mark.parametrize("fault", ["kill -9", "SIGSTOP"])
def test_prefill_worker_lost_mid_transfer_falls_back_to_local_prefill(served, fault):
    s = served("disagg", *SLOW)
    victim = service_pids(s, "PrefillWorker")[0]
    sig = signal.SIGKILL if fault == "kill -9" else signal.SIGSTOP
    t0 = time.time()
    try:
        pieces, finish = first_token_then(s, lambda: (time.sleep(0.1), os.kill(victim, sig)))
    finally:
        if sig == signal.SIGSTOP:
            os.kill(victim, signal.SIGCONT)
    assert finish == "length" and len(pieces) >= 1
    assert metric(s, "dynamo_disagg_prefill_fallbacks_total") == 1, s.output()
    assert "prefilling locally" in s.output()
    if fault == "SIGSTOP":
        assert time.time() - t0 >= 1.4  # it waited for the timeout
    assert all(v == 0 for v in used_blocks(s, "Worker").values())
    if fault == "SIGSTOP":
        # Resumed, the stalled prefill worker learns the transfer was given
        # up and frees the sequence.
        deadline = time.time() + 10
        while True:
            seen = used_blocks(s, "PrefillWorker")
            if seen and not any(seen.values()):
                break
            assert time.time() < deadline, (seen, s.output())


def test_decode_worker_killed_mid_transfer_frees_the_prefill_sequence(served):
    s = served("disagg", *SLOW)
    victim = service_pids(s, "Worker")[0]
    try:  # the Processor may migrate the stream to the restarted worker
        first_token_then(s, lambda: os.kill(victim, signal.SIGKILL))
    except Exception:
        pass
    s.wait_for("the decode worker left mid-transfer", timeout=10)
    assert all(v == 0 for v in used_blocks(s, "PrefillWorker").values())
    assert "KV layout" not in s.output()


def test_mismatched_layout_is_refused_naming_it(served):
    s = served("disagg", "--PrefillWorker.kv-bytes-per-block=1024")
    r = ask(s, LONG)
    assert r.usage.completion_tokens == 12
    out = s.output()
    assert "KV layout mismatch: kv_bytes_per_block is 1024 here and 32768 at the other worker" in out, out
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 0
    assert metric(s, "dynamo_disagg_prefill_fallbacks_total") == 1


def test_the_router_sees_the_kv_a_decode_worker_imported(served):
    """disagg_router: a long prompt one decode worker got from the
    PrefillWorker is announced in that worker's KV events like computed
    blocks, so the KV router sends its continuation there, with the overlap
    counted; load metrics on both sides go back to 0 blocks in use."""
    s = served("disagg_router", n_services=5)
    s.wait_for("role decode, instance", count=2, timeout=30)
    out = s.output()
    inst = {int(i): int(h, 16) for i, h in
            re.findall(r"(?<![A-Za-z])Worker (\d+): .* role decode, instance ([0-9a-f]+)", out)}
    assert len(inst) == 2, out
    prompt = [1000 + k for k in range(600)]  # 37 full blocks of 16: over 256, so remote

    async def scenario():
        rt = await DistributedRuntime.connect(control_socket=s.sock)
        engine = await rt.namespace("dynamo").component("Worker").endpoint("generate").client()
        router = await rt.namespace("dynamo").component("Router").endpoint("generate").client()
        await engine.wait_for_instances(2, timeout=10)
        await router.wait_for_instances(1, timeout=10)
        for iid in inst.values():  # each decode worker, its own long prompt
            body = json.dumps({"token_ids": prompt[:1] + [iid % 997] + prompt[2:],
                               "max_tokens": 2}).encode()
            got = [json.loads(m) async for m in engine.direct(body, iid)]
            assert got, iid
        answers = {}
        deadline = time.time() + 5
        while True:  # KV events travel over the bus
            for iid in inst.values():
                tokens = prompt[:1] + [iid % 997] + prompt[2:] + [7, 8, 9]
                msgs = [json.loads(m) async for m in
                        router.generate(json.dumps({"token_ids": tokens}).encode())]
                answers[iid] = (int(msgs[0]["worker_id"], 16), msgs[0]["overlap_blocks"])
            if all(answers[i] == (i, 37) for i in inst.values()) or time.time() > deadline:
                break
            await asyncio.sleep(0.05)
        rt.close()
        return answers

    answers = asyncio.run(scenario())
    assert all(answers[i] == (i, 37) for i in inst.values()), (answers, inst)
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 2
    assert metric(s, "dynamo_disagg_local_prefills_total") == 0
    assert all(v == 0 for v in used_blocks(s, "Worker").values())
    assert all(v == 0 for v in used_blocks(s, "PrefillWorker").values())


def test_max_tokens_1_and_a_prefill_queue_shared_by_two_decode_workers(served):
    """(h) A max_tokens 1 request is prefilled remotely with no KV moved.
    (i) Two decode workers compare the same queue, the prefill worker's
    (from its load reports): with max-prefill-queue-size 2, two of six
    long prompts go remote however the Processor spreads them (each worker
    counting only its own would send four). (j) A prefill waiting in the
    busy prefill worker's queue longer than kv-transfer-timeout-ms does
    not fall back while that worker reports its load; (k) a stopped one
    does."""
    s = served("disagg", "--Worker.ServiceArgs.workers=2", "--Worker.max-prefill-queue-size=2",
               "--PrefillWorker.prefill-per-token-us=1000", "--Worker.kv-transfer-timeout-ms=1500",
               n_services=5)
    s.wait_for("Worker ready", count=3, timeout=60)
    r = ask(s, fresh("one"), n=1)
    assert r.usage.completion_tokens == 1 and r.choices[0].text
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 1
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="PrefillWorker") == 1
    assert metric(s, "dynamo_disagg_local_prefills_total") == 0
    assert metric(s, "dynamo_disagg_kv_transfer_bytes_total") == 0  # either side
    assert metric(s, "dynamo_disagg_kv_transfer_seconds_count") == 0

    # Six fresh long prompts 0.25 s apart; each long prefill takes ~2.5 s.
    answers = [None] * 6

    def one(k):
        answers[k] = ask(s, fresh(f"q{k}x"), n=4)

    threads = []
    for k in range(6):
        threads.append(threading.Thread(target=one, args=(k,)))
        threads[-1].start()
        time.sleep(0.25)
    # Both decode workers see the prefill worker's two.
    assert metric(s, "dynamo_disagg_prefill_queue_length") == 4
    for t in threads:
        t.join(timeout=60)
    assert all(a is not None and a.usage.completion_tokens == 4 for a in answers)
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="PrefillWorker") == 3
    assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 3
    assert metric(s, "dynamo_disagg_local_prefills_total") == 4
    # The second waited ~5 s for its first token, past the 1.5 s timeout.
    assert metric(s, "dynamo_disagg_prefill_fallbacks_total") == 0, s.output()
    time.sleep(1.2)  # a report after the last prefill
    assert metric(s, "dynamo_disagg_prefill_queue_length") == 0

    victim = service_pids(s, "PrefillWorker")[0]
    os.kill(victim, signal.SIGSTOP)
    try:
        t0 = time.time()
        r = ask(s, fresh("stopped"), n=4)
        assert r.usage.completion_tokens == 4
        assert time.time() - t0 < 1.5 * 2 + 3  # silent twice the timeout at most
    finally:
        os.kill(victim, signal.SIGCONT)
    assert metric(s, "dynamo_disagg_prefill_fallbacks_total") == 1
    assert "prefill worker sent nothing for 1500 ms" in s.output()


# ---- llama.cpp: the KV moved between two real engines ---------------------------

LLAMA_PROMPTS = [
    "The capital of France is",
    " ".join(["Once upon a time there was a little robot who wanted to learn to paint."] * 30),
    "List three colors: " + ", ".join(f"item {i}" for i in range(150)),
]


def greedy_answers(config, *overrides):
    graph = "disagg" if config.startswith("disagg") else "agg"
    s = start(graph, "--Worker.threads=1", "--Worker.num-blocks=256",
              f"--Processor.tokenizer={GRAPHS}/tokenizer.json", *overrides,
              n_services=4 if graph.startswith("disagg") else 3, config=config)
    try:
        out = []
        for p in LLAMA_PROMPTS:
            r = s.client.completions.create(model="smollm2-135m", prompt=p, max_tokens=16,
                                            temperature=0.0, logprobs=2,
                                            extra_body={"ignore_eos": True})
            lp = r.choices[0].logprobs
            out.append((lp.tokens, lp.top_logprobs, r.usage.prompt_tokens))
        remote = metric(s, "dynamo_disagg_remote_prefills_total", component="Worker")
        moved = metric(s, "dynamo_disagg_kv_transfer_bytes_total", component="Worker")
        return s, out, remote, moved
    finally:
        s.stop()


def test_llama_disagg_agrees_with_agg():
    """Greedy answers through disagg_llama (long prompts prefilled by the
    PrefillWorker, their KV installed with llama_state_seq_set_data) equal
    agg_llama's, or first differ where agg's top two are within 0.1."""
    _, ref, _, _ = greedy_answers("agg_llama")
    s, got, remote, moved = greedy_answers("disagg_llama", "--PrefillWorker.threads=1",
                            "--PrefillWorker.num-blocks=256", "--Worker.max-local-prefill-length=64",
                            "--Worker.kv-transfer-timeout-ms=30000")
    out = s.output()
    assert "prefilling locally" not in out, out
    for (rt, rtop, n), (gt, _, _) in zip(ref, got):
        if rt != gt:
            i = next(k for k in range(len(rt)) if rt[k] != gt[k])
            top = sorted(rtop[i].values(), reverse=True)
            assert len(top) == 2 and top[0] - top[1] < 0.1, (i, rt, gt, rtop[i])
    # The two long prompts went to the prefill worker, their KV in more
    # than one 1 MiB chunk each (SmolLM2 keeps ~23 KB per token).
    assert remote == 2 and moved > 4 * (1 << 20), (remote, moved)


def test_llama_mismatched_cache_type_is_refused_naming_it():
    """A PrefillWorker whose KV cache holds q8_0 keys cannot hand them to a
    decode worker holding f16: refused, naming type_k and both values, and
    the request is answered by a local prefill."""
    s = start("disagg", "--Worker.threads=1", "--PrefillWorker.threads=1",
              "--Worker.num-blocks=128", "--PrefillWorker.num-blocks=128",
              "--PrefillWorker.cache-type-k=q8_0", "--Worker.max-local-prefill-length=64",
              f"--Processor.tokenizer={GRAPHS}/tokenizer.json", config="disagg_llama")
    try:
        r = s.client.completions.create(model="smollm2-135m", prompt=LLAMA_PROMPTS[1],
                                        max_tokens=4, temperature=0.0,
                                        extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == 4
        out = s.output()
        assert re.search(r"KV layout mismatch: type_k is (f16 here and q8_0|q8_0 here and f16) "
                         r"at the other worker", out), out
        assert metric(s, "dynamo_disagg_remote_prefills_total", component="Worker") == 0
        assert metric(s, "dynamo_disagg_prefill_fallbacks_total") == 1
    finally:
        s.stop()


def usable_cpus():
    """The CPUs this process may use: its affinity, below that a cgroup v2
    quota (what src/llm/services/threads.c reads; the test's cgroup is the
    workers')."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


def test_llama_threads_default_to_the_cpus_shared_by_the_engine_workers():
    """disagg_llama runs two engine workers on this machine: one without
    `threads` gets half the CPUs this process may use; an explicit
    `threads` wins."""
    s = start("disagg", "--Worker.threads=5", "--Worker.num-blocks=64",
              "--PrefillWorker.num-blocks=64", f"--Processor.tokenizer={GRAPHS}/tokenizer.json",
              config="disagg_llama")
    try:
        out = s.output()
        assert "Worker 0: engine llama.cpp" in out and ", threads 5, role decode" in out, out
        want = max(1, usable_cpus() // 2)
        assert f", threads {want}, role prefill" in out, out
    finally:
        s.stop()
