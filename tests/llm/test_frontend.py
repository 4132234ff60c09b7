"""The Frontend service (src/llm/services/frontend.c) end to end, with the official
openai client: a control plane, the Frontend from libdynamo_llm.so and the
fake Processor/Worker from tests/llm/fake_processor.c, each a `dynamo worker`
process started here (so the test decides when the Worker goes live).

The fake Processor echoes the prompt word by word (one token per word), cuts
at max_tokens with finish_reason "length", and has magic prompts: FAIL400,
FAIL500, MIDFAIL, SLOW (a word per 100 ms) and ECHOREQ (sends back the
request it got). It appends the request_id of every cancelled request to
$FAKE_CANCEL_FILE.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("DYN_BUILD", ROOT / "build"))
DYN_BIN = os.environ.get("DYN_BIN", str(BUILD / "dynamo"))
LLM_LIB = os.environ.get("DYN_LLM_LIB", str(BUILD / "lib" / "libdynamo_llm.so"))
FAKE_LIB = os.environ.get("FAKE_PROCESSOR_LIB",
                          str(BUILD / "tests" / "llm" / "fake_processor.so"))
MODEL = "fake-model"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout}s")


class Stack:
    """The processes of the graph, their logs, and an openai client."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="dyn-fe-")
        self.sock = os.path.join(self.tmp, "control.sock")
        self.cancel_file = os.path.join(self.tmp, "cancelled")
        self.port = free_port()
        self.procs = {}
        self.env = dict(os.environ, DYN_CONTROL_SOCKET=self.sock,
                        FAKE_CANCEL_FILE=self.cancel_file, DYNAMO_SERVICE_CONFIG=json.dumps({
                            "Frontend": {"port": self.port, "host": "127.0.0.1",
                                         "model": MODEL, "processor_wait_ms": 300}}))
        self.spawn("control", [DYN_BIN, "control", "--socket", self.sock])
        wait_until(lambda: os.path.exists(self.sock), 10, "control socket")
        self.worker("Frontend", LLM_LIB)
        self.worker("Processor", FAKE_LIB)
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="x",
                                    max_retries=0, timeout=10)

    def spawn(self, name, argv):
        log = open(os.path.join(self.tmp, name + ".log"), "w+")
        self.procs[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             env=self.env, start_new_session=True), log)

    def log(self, name):
        with open(os.path.join(self.tmp, name + ".log")) as f:
            return f.read()

    def worker(self, service, lib):
        self.spawn(service, [DYN_BIN, "worker", f"{lib}:{service}", "--service", service])
        try:
            wait_until(lambda: f"{service} ready" in self.log(service), 15, f"{service} ready")
        except AssertionError:
            raise AssertionError(self.log(service))

    def stop(self, name):
        p, log = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        log.close()
        return p.returncode

    def close(self):
        """Stops everything; returns what went wrong: a worker that did not
        exit 0 on SIGTERM, or a sanitizer report in any log."""
        problems = []
        for name in [n for n in self.procs if n != "control"] + ["control"]:
            if name in self.procs:
                rc = self.stop(name)
                if rc != 0:
                    problems.append(f"{name} exited {rc}")
        for f in sorted(Path(self.tmp).glob("*.log")):
            text = f.read_text()
            if "Sanitizer" in text or "runtime error:" in text:
                problems.append(f"{f.name}:\n{text[-3000:]}")
        return problems

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, r.getheader("Content-Type"), body

    def post_raw(self, path, body):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, r.getheader("Content-Type"), data

    def cancelled(self):
        try:
            with open(self.cancel_file) as f:
                return f.read().split()
        except FileNotFoundError:
            return []


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    yield s
    problems = s.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def live(stack):
    """The stack with its (fake) Worker live."""
    if "Worker" not in stack.procs:
        stack.worker("Worker", FAKE_LIB)
        wait_until(lambda: stack.get("/health")[0] == 200, 5, "/health 200")
    return stack


def chat(stack, content, **kw):
    return stack.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kw)


# ---- before a worker is live ------------------------------------------------

def test_health_503_until_a_worker_is_live(stack):
    assert stack.get("/live")[0] == 200
    status, ctype, body = stack.get("/health")
    assert status == 503 and ctype.startswith("application/json")
    assert json.loads(body)["status"] == "unhealthy"
    with pytest.raises(openai.InternalServerError) as e:
        chat(stack, "hello")
    assert e.value.status_code == 503
    assert "no live worker" in e.value.message
    stack.worker("Worker", FAKE_LIB)
    wait_until(lambda: stack.get("/health")[0] == 200, 5, "/health 200")
    h = json.loads(stack.get("/health")[2])
    assert h["status"] == "healthy" and h["instances"] == 1


# ---- chat and completions ---------------------------------------------------

def test_chat_unary(live):
    r = chat(live, "hello big world")
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.id.startswith("chatcmpl-")
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant"
    assert c.message.content == "hello big world" and c.finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 3, 6)
    assert r.usage.prompt_tokens_details.cached_tokens == 1


def test_chat_content_parts_and_history(live):
    r = live.client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second one"}]}])
    assert r.choices[0].message.content == "second one"


def test_chat_stream_with_usage(live):
    chunks = list(chat(live, "one two three four", stream=True,
                       stream_options={"include_usage": True}))
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content == ""
    body, usage = chunks[:-1], chunks[-1]
    assert "".join(c.choices[0].delta.content or "" for c in body) == "one two three four"
    assert [c.choices[0].finish_reason for c in body][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
    assert all(c.usage is None for c in body)
    assert usage.choices == [] and usage.usage.completion_tokens == 4
    assert usage.usage.prompt_tokens == 4 and usage.usage.total_tokens == 8


def test_chat_stream_max_tokens_length(live):
    chunks = list(chat(live, "a b c d e", stream=True, max_tokens=2))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage chunk


def test_max_completion_tokens_unary(live):
    r = chat(live, "a b c d e", max_completion_tokens=3)
    assert r.choices[0].message.content == "a b c"
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_completions_unary_and_stream(live):
    r = live.client.completions.create(model=MODEL, prompt="the quick brown fox", max_tokens=3)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text == "the quick brown" and r.choices[0].finish_reason == "length"
    assert r.usage.total_tokens == 7
    chunks = list(live.client.completions.create(model=MODEL, prompt=["to be or"], stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks[:-1]) == "to be or"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_request_passed_through_with_unknown_fields(live):
    r = chat(live, "ECHOREQ", temperature=0.5, extra_body={"my_extension": {"a": [1, 2]}})
    sent = json.loads(r.choices[0].message.content)
    assert sent["kind"] == "chat" and sent["request_id"] == r.id
    assert sent["request"]["my_extension"] == {"a": [1, 2]}
    assert sent["request"]["temperature"] == 0.5 and sent["request"]["model"] == MODEL
    r = live.client.completions.create(model=MODEL, prompt="ECHOREQ")
    sent = json.loads(r.choices[0].text)
    assert sent["kind"] == "completion" and sent["request_id"].startswith("cmpl-")


def test_models(live):
    models = live.client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "dynamo" and models.data[0].object == "model"


# ---- errors -----------------------------------------------------------------

def test_bad_json_and_bad_fields(live):
    status, ctype, body = live.post_raw("/v1/chat/completions", b"{not json")
    assert status == 400 and ctype.startswith("application/json")
    err = json.loads(body)["error"]
    assert "not valid JSON" in err["message"] and err["code"] == 400
    with pytest.raises(openai.BadRequestError) as e:
        live.client.chat.completions.create(model=MODEL, messages=[])
    assert e.value.status_code == 400 and "messages" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        live.client.post("/chat/completions", body={"model": MODEL}, cast_to=object)
    assert "'messages' is required" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        chat(live, "hi", temperature="hot")
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        chat(live, "hi", n=2)
    assert "'n' must be 1" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        live.client.completions.create(model=MODEL, prompt=[1, 2, 3])
    assert "token-id prompts" in e.value.message


def test_unknown_model_404(live):
    with pytest.raises(openai.NotFoundError) as e:
        live.client.chat.completions.create(model="nope",
                                            messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404
    assert e.value.body["message"] == "The model `nope` does not exist."
    assert e.value.body["type"] == "NotFoundError"


def test_processor_errors_mapped(live):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            r = chat(live, "FAIL400 please", stream=stream)
            list(r) if stream else None
        assert e.value.status_code == 400
        assert e.value.body["message"] == "prompt has 5000 tokens, the model's context is 4096"
    with pytest.raises(openai.InternalServerError) as e:
        chat(live, "FAIL500")
    assert e.value.status_code == 500 and "engine exploded" in e.value.message


def test_error_after_stream_started(live):
    got = []
    with pytest.raises(openai.APIError) as e:
        for c in chat(live, "MIDFAIL", stream=True):
            got.append(c.choices[0].delta.content)
    assert "partial" in got
    assert "engine died mid-stream" in str(e.value.message)


# ---- the wire, cancellation, metrics ----------------------------------------

def test_raw_sse_framing(live):
    body = json.dumps({"model": MODEL, "stream": True,
                       "messages": [{"role": "user", "content": "x y"}]})
    status, ctype, data = live.post_raw("/v1/chat/completions", body)
    assert status == 200 and ctype == "text/event-stream"
    assert data.endswith(b"data: [DONE]\n\n")
    events = data.split(b"\n\n")
    assert events[-1] == b""
    events = events[:-1]
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events)
    parsed = [json.loads(e[6:]) for e in events[:-1]]
    assert [p["choices"][0]["delta"] for p in parsed] == [
        {"role": "assistant", "content": ""}, {"content": "x"}, {"content": " y"}]
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in parsed[0]


def test_client_disconnect_cancels_upstream(live):
    before = len(live.cancelled())
    stream = chat(live, "SLOW " + "w " * 100, stream=True)
    it = iter(stream)
    first = next(it)
    next(it)  # a content delta: the request is running upstream
    samples, _ = parse_prometheus(live.get("/metrics")[2].decode())
    assert list(samples["dynamo_frontend_inflight_requests"].values()) == [1]
    t0 = time.time()
    stream.close()
    ids = wait_until(lambda: live.cancelled()[before:], 1.0, "the cancel at the Processor")
    assert ids == [first.id]
    assert time.time() - t0 < 1.0


def test_unary_client_timeout_cancels_upstream(live):
    before = len(live.cancelled())
    with pytest.raises(openai.APITimeoutError):
        live.client.with_options(timeout=0.3).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "SLOW " + "w " * 100}])
    ids = wait_until(lambda: live.cancelled()[before:], 1.0, "the cancel at the Processor")
    assert len(ids) == 1 and ids[0].startswith("chatcmpl-")


def parse_prometheus(text):
    """{name: {labels_tuple: value}} plus {name: type} from exposition text."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        labels = ()
        if "{" in head:
            name, rest = head.split("{", 1)
            assert rest.endswith("}")
            labels = tuple(sorted(tuple(kv.split("=", 1)) for kv in rest[:-1].split(",")))
            labels = tuple((k, v.strip('"')) for k, v in labels)
        else:
            name = head
        samples.setdefault(name, {})[labels] = float(value)
    return samples, types


def test_metrics(live):
    chat(live, "metrics one two")
    status, ctype, body = live.get("/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples, types = parse_prometheus(body.decode())
    assert types["dynamo_frontend_requests_total"] == "counter"
    assert types["dynamo_frontend_inflight_requests"] == "gauge"
    reqs = samples["dynamo_frontend_requests_total"]

    def count(**want):
        return sum(v for k, v in reqs.items() if all((kk, vv) in k for kk, vv in want.items()))

    assert count(endpoint="chat_completions", request_type="unary", status="success") >= 3
    assert count(endpoint="chat_completions", request_type="stream", status="success") >= 2
    assert count(endpoint="completions", status="success") >= 2
    assert count(status="error") >= 5
    assert count(endpoint="chat_completions", request_type="stream", status="cancelled") >= 1
    assert count(endpoint="chat_completions", request_type="unary", status="cancelled") >= 1
    assert all(dict(k)["model"] == MODEL for k in reqs)
    assert list(samples["dynamo_frontend_inflight_requests"].values()) == [0]
    assert list(samples["dynamo_frontend_output_tokens_total"].values())[0] >= 20
    for h in ("time_to_first_token", "inter_token_latency", "request_duration"):
        name = f"dynamo_frontend_{h}_seconds"
        assert types[name] == "histogram"
        buckets = sorted(((float(dict(k)["le"]), v) for k, v in samples[name + "_bucket"].items()))
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{name}: buckets not cumulative"
        assert buckets[-1][0] == float("inf")
        total = list(samples[name + "_count"].values())[0]
        assert buckets[-1][1] == total and total > 0
        assert list(samples[name + "_sum"].values())[0] > 0


def test_no_processor_503(live):
    """Last: the Processor goes away; requests fail fast with 503."""
    assert live.stop("Processor") == 0
    t0 = time.time()
    with pytest.raises(openai.InternalServerError) as e:
        chat(live, "anyone there")
    assert e.value.status_code == 503 and time.time() - t0 < 5
