"""The SDK under `dynamo serve`: the seed example, config, link(), dry run,
restarts, shutdown, errors and Python <-> C interop."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BUILD, DYN_BIN, GRAPHS, ROOT, call, descendants, env_for_tests, pids_alive

SEED = f"{GRAPHS}/seed.py:ServiceA"
KNOBS = f"{GRAPHS}/knobs.py"
C_GRAPH = f"{BUILD}/examples/hello_world_c/libhello_services.so"


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([DYN_BIN, *args], capture_output=True, text=True,
                          env=env or env_for_tests(), timeout=timeout)


def test_seed_example_runs_unchanged(serve, tmp_path):
    env = env_for_tests(MARK_DIR=tmp_path, DYN_GPU_COUNT=1)
    s = serve(SEED, env=env)
    s.wait_for("ServiceA initialized with model: meta-llama/Llama-3.1-8B-Instruct")
    out = call(s.sock, "dynamo/ServiceA/generate", {"prompt": "  hello  "})
    # depends() call to ServiceB, then the engine made in the start hook
    assert out == {"model": "meta-llama/Llama-3.1-8B-Instruct", "completion": "HELLO"}
    assert (tmp_path / "engine_started").exists()
    assert s.stop() == 0
    assert "ServiceA engine shut down" in s.output()
    assert (tmp_path / "engine_shutdown").exists()  # the shutdown hook really ran


def test_config_precedence_cli_over_yaml_over_decorator_over_ctor(serve, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("Common:\n  model: tiny\nLeaf:\n  greeting: yaml\n  level: 1\n"
                   "  common-configs: [model]\n  ServiceArgs:\n    workers: 2\n"
                   "    envs:\n      - {name: KNOB_ENV, value: from-yaml}\n")
    # ctor default for greeting is "ctor"; YAML says "yaml"; CLI says "cli".
    s = serve(f"{KNOBS}:Leaf", "-f", str(cfg), "--Leaf.greeting=cli")
    s.wait_for("Leaf ready", count=2)  # ServiceArgs.workers (YAML) beats the decorator's 1
    out = call(s.sock, "knobs/Leaf/show", {"what": "x"})
    assert out["greeting"] == "cli"      # CLI > YAML
    assert out["level"] == 1             # YAML > constructor default
    assert out["model"] == "tiny"        # Common key the service opted into
    assert out["env"] == "from-yaml"     # ServiceArgs.envs reach the worker
    assert out["context"]["service"] == "Leaf" and out["context"]["namespace"] == "knobs"
    assert out["context"]["worker_index"] in (0, 1)
    s.stop()
    # With no config at all the constructor default stands.
    s2 = serve(f"{KNOBS}:Leaf")
    s2.wait_for("Leaf ready")
    assert call(s2.sock, "knobs/Leaf/show", {"what": "x"})["greeting"] == "ctor"
    s2.stop()


def test_cli_override_of_service_args_wins(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("Leaf:\n  ServiceArgs:\n    workers: 2\n")
    r = run_cli("serve", f"{KNOBS}:Leaf", "-f", str(cfg), "--Leaf.ServiceArgs.workers=3", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Leaf.") >= 3 and "Leaf.2" in r.stdout


def test_link_prunes_unlinked_edges():
    r = run_cli("serve", f"{GRAPHS}/linked.py:Top", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "Middle" in r.stdout and "Leaf" in r.stdout
    assert "Other" not in r.stdout
    full = run_cli("serve", f"{KNOBS}:Top", "--dry-run")  # depends alone: maximal graph
    assert full.returncode == 0, full.stderr
    assert "Other" in full.stdout


def test_dry_run_prints_plan_and_starts_nothing(tmp_path):
    env = env_for_tests(DYN_GPU_COUNT=2, MARK_DIR=tmp_path)
    r = run_cli("serve", SEED, "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    for text in ("ServiceA", "ServiceB", "CUDA_VISIBLE_DEVICES=\"0\"", "dynamo.sdk.worker"):
        assert text in r.stdout, text
    assert not (tmp_path / "engine_started").exists()


def test_too_many_gpus_is_a_clear_error():
    r = run_cli("serve", SEED, "--dry-run", env=env_for_tests(DYN_GPU_COUNT=0))
    assert r.returncode != 0
    assert "GPU" in r.stderr and "ServiceA" in r.stderr


def test_crashed_worker_is_restarted_and_shutdown_leaves_nothing(serve, tmp_path):
    s = serve(f"{KNOBS}:Flaky", env=env_for_tests(MARK_DIR=tmp_path))
    s.wait_for("Flaky ready", timeout=30)
    assert (tmp_path / "flaky_started").read_text() == "xx"  # crashed once, then ran
    assert call(s.sock, "knobs/Flaky/alive", "?") == "yes"
    child = int((tmp_path / "child_pid").read_text())
    tree = descendants(s.proc.pid)
    assert child in tree
    assert s.stop() == 0
    time.sleep(0.2)
    assert pids_alive(tree | {child}) == []  # not even the worker's own child


def test_bad_config_names_file_service_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("Nope:\n  x: 1\n")
    r = run_cli("serve", f"{KNOBS}:Leaf", "-f", str(bad), "--dry-run")
    assert r.returncode != 0 and "bad.yaml" in r.stderr and "Nope" in r.stderr
    bad.write_text("Leaf:\n  ServiceArgs:\n    workers: zero\n")
    r = run_cli("serve", f"{KNOBS}:Leaf", "-f", str(bad), "--dry-run")
    assert r.returncode != 0
    assert "bad.yaml" in r.stderr and "Leaf" in r.stderr and "workers" in r.stderr
    bad.write_text("Leaf:\n  greeting: [unclosed\n")
    r = run_cli("serve", f"{KNOBS}:Leaf", "-f", str(bad), "--dry-run")
    assert r.returncode != 0 and "bad.yaml" in r.stderr and "line" in r.stderr


def test_config_values_of_the_wrong_type_are_errors_not_tracebacks(tmp_path):
    hello = f"{ROOT}/examples/hello_world/hello_world.py:Frontend"
    bad = tmp_path / "bad.yaml"
    for text, service, key in [('Frontend:\n  port: "eighty"\n', "Frontend", "port"),
                               ("Backend:\n  ServiceArgs:\n    workers: x\n", "Backend",
                                "ServiceArgs.workers")]:
        bad.write_text(text)
        for target in (hello, f"{C_GRAPH}:Frontend"):
            r = run_cli("serve", target, "-f", str(bad), "--dry-run")
            assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
            assert f"bad.yaml: service {service}, key '{key}'" in r.stderr, r.stderr
    # The Python resolver and worker check the same keys themselves when the
    # configuration reaches them without `dynamo serve`.
    for config, key in [({"Frontend": {"port": "eighty"}}, "port"),
                        ({"Frontend": {"host": 8}}, "host"),
                        ({"Backend": {"ServiceArgs": {"resources": {"gpu": "two"}}}},
                         "ServiceArgs.resources.gpu")]:
        env = env_for_tests(DYNAMO_SERVICE_CONFIG=json.dumps(config), DYN_CONFIG_FILE="my.yaml")
        for module, args in [("dynamo.sdk.plan", [hello]),
                             ("dynamo.sdk.worker", [hello, "--service", "Frontend"])]:
            if module == "dynamo.sdk.worker" and key.startswith("ServiceArgs"):
                continue  # ServiceArgs are the plan's, not the worker's
            r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                               text=True, env=env, timeout=30)
            assert r.returncode == 1 and "Traceback" not in r.stderr, (module, r.stderr)
            assert f"my.yaml: service" in r.stderr and f"key '{key}'" in r.stderr, r.stderr


def test_unknown_service_and_endpoint_errors(serve):
    r = run_cli("serve", f"{KNOBS}:Nope", "--dry-run")
    assert r.returncode != 0 and "Nope" in r.stderr
    r = run_cli("serve", f"{KNOBS}:Middle", "--service-name", "Ghost", "--dry-run")
    assert r.returncode != 0 and "Ghost" in r.stderr and "Leaf" in r.stderr
    s = serve(f"{KNOBS}:Leaf")
    s.wait_for("Leaf ready")
    from dynamo._core import DynamoError
    with pytest.raises(DynamoError) as e:
        call(s.sock, "knobs/Leaf/missing", {"what": "x"}, timeout=1.0)
    assert "no live instance of knobs/Leaf/missing" in str(e.value)
    s.stop()


def test_streaming_and_unary_depends_calls(serve):
    s = serve(f"{KNOBS}:Top")
    s.wait_for("Top ready")
    assert call(s.sock, "knobs/Top/go", {"what": "via"})["what"] == "via"
    assert call(s.sock, "knobs/Leaf/count", 5, stream=True) == [0, 1, 2, 3, 4]
    s.stop()


def test_c_graph_and_python_interop(serve):
    # The C graph alone.
    s = serve(f"{C_GRAPH}:Middle")
    s.wait_for("Middle ready")
    assert call(s.sock, "hello/Middle/generate", {"text": "hi there"}, stream=True) == [
        "Middle: Backend: hi", "Middle: Backend: there-mid-back"]
    s.stop()
    # Python Middle calling the C Backend: one graph, two languages.
    s = serve(f"{GRAPHS}/mixed.py:Middle")
    s.wait_for("Middle ready")
    s.wait_for("Backend ready")
    assert call(s.sock, "hello/Middle/generate", {"text": "a b"}, stream=True) == [
        "Middle: Backend: a", "Middle: Backend: b-mid-back"]
    s.stop()


def _post(port, path, body, timeout=15.0):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read().decode()
    conn.close()
    return r.status, r.getheader("Content-Type"), data


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("graph", ["python", "c", "c-from-python"])
def test_hello_world_over_http(serve, graph):
    port = _free_port()
    if graph == "python":
        target = f"{ROOT}/examples/hello_world/hello_world.py:Frontend"
        args = ["-f", f"{ROOT}/examples/hello_world/config.yaml"]
    elif graph == "c":
        target, args = f"{C_GRAPH}:Frontend", []
    else:
        target, args = f"{GRAPHS}/c_declared.py:Frontend", []
    s = serve(target, *args, f"--Frontend.port={port}")
    s.wait_for(f"Frontend HTTP: http://127.0.0.1:{port}")
    s.wait_for("Frontend ready")
    s.wait_for("Middle ready")
    s.wait_for("Backend ready")
    status, ctype, body = _post(port, "/generate", json.dumps({"text": "hello world"}))
    assert status == 200 and ctype.startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]
    assert events == ["Frontend: Middle: Backend: hello", "Frontend: Middle: Backend: world-mid-back"]
    status, _, body = _post(port, "/generate", "{not json")
    assert status == 400 and "error" in json.loads(body)
    if graph == "python":
        status, _, body = _post(port, "/generate", json.dumps({"txt": "x"}))
        assert status == 400 and "unknown field" in body
    assert s.stop() == 0


def test_get_endpoint_gives_the_raw_client(serve):
    s = serve(f"{KNOBS}:Top")
    s.wait_for("Top ready")
    assert call(s.sock, "knobs/Top/raw", 3, stream=True) == [0, 1, 2]
    s.stop()


def test_sigterm_lets_api_streams_finish(serve):
    # SIGTERM while an @api answer streams: the worker refuses new HTTP
    # requests and lets the one in flight end before it exits.
    import http.client
    import socket as socket_mod
    port = _free_port()
    s = serve(f"{GRAPHS}/slow_api.py:Slow", f"--Slow.port={port}")
    s.wait_for("Slow ready")
    body = json.dumps({"n": 30})
    sock = socket_mod.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall((f"POST /count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    while b"data: 1" not in got:
        got += sock.recv(4096)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    late = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        late.request("POST", "/count", body=json.dumps({"n": 1}),
                     headers={"Content-Type": "application/json"})
        assert late.getresponse().status == 503
    except (ConnectionError, socket_mod.timeout):
        pass  # or the listener is already gone; either way no new work
    while not got.endswith(b"0\r\n\r\n"):  # the chunked body's end
        chunk = sock.recv(4096)
        assert chunk, f"the stream was cut off: {got[-200:]!r}"
        got += chunk
    events = [int(line[6:]) for line in got.decode().split("\n") if line.startswith("data: ")]
    assert events == list(range(30))
    assert s.proc.wait(20) == 0
