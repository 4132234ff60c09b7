"""Tests for `dynamo serve`, the process supervisor.

They run the real binary ($DYN_BIN, default /tmp/svbuild/dynamo) against a
fake Python SDK: `dynamo.sdk.plan` and `dynamo.sdk.worker` modules written
into a temporary directory that goes first on PYTHONPATH. The fake resolver
reads the graph from a small graph.py and records the configuration it was
given; the fake worker records its environment, prints a few lines, and
crashes, ignores SIGTERM or starts children when the merged configuration
tells it to (`fake:` keys in its service's section). Every wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

DYN_BIN = os.environ.get("DYN_BIN", "/tmp/svbuild/dynamo")

# A misconfigured run must fail, not pass by skipping everything.
assert os.access(DYN_BIN, os.X_OK), f"no dynamo binary at {DYN_BIN} (set DYN_BIN)"

FAKE_PLAN = r'''
import importlib.util, json, os, sys

def main():
    target = sys.argv[1]
    path, _, entry = target.rpartition(":")
    cfg = json.loads(os.environ.get("DYNAMO_SERVICE_CONFIG") or "{}")
    with open(os.path.join(os.environ["FAKE_RECORD"], "plan.json"), "w") as f:
        json.dump({"config": cfg, "file": os.environ.get("DYN_CONFIG_FILE")}, f)
    if not os.path.exists(path):
        print(f"fake-plan error: no graph file {path}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("graph", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    services = []
    for s in mod.SERVICES:
        s = dict(s)
        workers = cfg.get(s["name"], {}).get("ServiceArgs", {}).get("workers")
        if workers is not None:
            s["workers"] = workers
        services.append(s)
    print(json.dumps({"target": target, "entry": entry, "kind": "python",
                      "services": services, "edges": mod.EDGES, "config": cfg}))
    return 0

sys.exit(main())
'''

FAKE_WORKER = r'''
import json, os, signal, socket, subprocess, sys, time

name = sys.argv[sys.argv.index("--service") + 1]
label = name + "." + os.environ["DYN_WORKER_INDEX"]
cfg = json.loads(os.environ["DYNAMO_SERVICE_CONFIG"])
fake = cfg.get(name, {}).get("fake", {})
rec = os.environ["FAKE_RECORD"]

if fake.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
sock = os.environ.get("DYN_CONTROL_SOCKET", "")
try:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(sock)
    s.close()
    socket_ok = True
except OSError as e:
    socket_ok = str(e)
child = subprocess.Popen(["sleep", "1000"]) if fake.get("child") else None
escaped = subprocess.Popen(["sleep", "1001"], start_new_session=True) if fake.get("escape") else None
with open(os.path.join(rec, label + ".starts"), "a") as f:
    f.write(f"{time.time()}\n")
keys = ["DYN_CONTROL_SOCKET", "DYN_SERVICE_NAME", "DYN_WORKER_INDEX", "DYN_SUPERVISOR_PID",
        "CUDA_VISIBLE_DEVICES", "MY_ENV"]
record = {"pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "ppid": os.getppid(),
          "env": {k: os.environ.get(k) for k in keys}, "config": cfg, "socket_ok": socket_ok,
          "child": child.pid if child else None, "escaped": escaped.pid if escaped else None,
          "argv": sys.argv}
tmp = os.path.join(rec, f"{label}.{os.getpid()}.tmp")
with open(tmp, "w") as f:
    json.dump(record, f)
os.rename(tmp, os.path.join(rec, f"{label}.{os.getpid()}.json"))

print(f"hello from {label}", flush=True)
print(f"warning from {label}", file=sys.stderr, flush=True)
if fake.get("long"):
    sys.stdout.write("L" * 100000 + "\n")
    sys.stdout.flush()
marker = os.path.join(rec, label + ".crashed")
if fake.get("crash_once") and not os.path.exists(marker):
    open(marker, "w").close()
    sys.stdout.write("partial line before the crash")
    sys.stdout.flush()
    os._exit(4)
if fake.get("crash_always"):
    time.sleep(0.05)
    os._exit(3)
while True:
    time.sleep(1000)
'''

GRAPH = r'''
SERVICES = [
    {"name": "Frontend", "namespace": "hello", "workers": 1,
     "resources": {"gpu": 0, "cpu": "1", "memory": "1Gi"},
     "envs": [{"name": "MY_ENV", "value": "front"}], "endpoints": ["generate"],
     "http": {"host": "0.0.0.0", "port": 8000,
              "routes": [{"method": "POST", "path": "/generate"}]},
     "dependencies": ["Middle"]},
    {"name": "Middle", "namespace": "hello", "workers": 1, "resources": {"gpu": 0},
     "envs": [], "endpoints": ["generate"], "http": None, "dependencies": ["Backend"]},
    {"name": "Backend", "namespace": "hello", "workers": 2, "resources": {"gpu": 1},
     "envs": [], "endpoints": ["generate"], "http": None, "dependencies": []},
]
EDGES = [["Frontend", "Middle"], ["Middle", "Backend"]]
'''


class Fake:
    def __init__(self, root: Path):
        self.root = root
        sdk = root / "fakepy" / "dynamo" / "sdk"
        sdk.mkdir(parents=True)
        (root / "fakepy" / "dynamo" / "__init__.py").write_text("")
        (sdk / "__init__.py").write_text("")
        (sdk / "plan.py").write_text(FAKE_PLAN)
        (sdk / "worker.py").write_text(FAKE_WORKER)
        (root / "graph.py").write_text(GRAPH)
        self.rec = root / "rec"
        self.rec.mkdir()
        self.target = "graph.py:Frontend"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(root / "fakepy")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["FAKE_RECORD"] = str(self.rec)
        env["DYN_PYTHON"] = sys.executable
        env["DYN_GPU_COUNT"] = "4"
        env["TMPDIR"] = str(root)  # the control socket's directory goes here
        env.pop("CUDA_VISIBLE_DEVICES", None)
        env.pop("DYN_LOG", None)
        self.env = env

    def yaml(self, text: str, name: str = "config.yaml") -> str:
        (self.root / name).write_text(textwrap.dedent(text))
        return name

    def run(self, *args, env=None, timeout=30):
        return subprocess.run([DYN_BIN, "serve", *args], cwd=self.root, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args):
        return Graph(self, args)

    def records(self, label=None):
        out = []
        for p in sorted(self.rec.glob("*.json")):
            if p.name == "plan.json" or (label and not p.name.startswith(label + ".")):
                continue
            out.append(json.loads(p.read_text()))
        return out

    def starts(self, label):
        p = self.rec / f"{label}.starts"
        return [float(x) for x in p.read_text().split()] if p.exists() else []

    def plan_seen(self):
        return json.loads((self.rec / "plan.json").read_text())


class Graph:
    """A `dynamo serve` running in the background, its output in files."""

    def __init__(self, fake: Fake, args):
        self.fake = fake
        self.out_path = fake.root / "serve.out"
        self.err_path = fake.root / "serve.err"
        self.proc = subprocess.Popen([DYN_BIN, "serve", *args], cwd=fake.root, env=fake.env,
                                     stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"))

    def out(self):
        return self.out_path.read_text()

    def err(self):
        return self.err_path.read_text()

    def wait_for(self, what, cond, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None and not cond():
                break
            time.sleep(0.05)
        if cond():
            return
        self.kill()
        pytest.fail(f"timed out waiting for {what}\n--- stdout\n{self.out()[-3000:]}\n"
                    f"--- stderr\n{self.err()[-3000:]}")

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"dynamo serve did not exit within {timeout} s\n--- stderr\n{self.err()[-3000:]}")

    def kill(self):
        """Last resort, so that a failed test leaves nothing running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for r in self.fake.records():
            for pid in (r["child"], r["escaped"]):
                if pid and alive(pid):
                    os.kill(pid, signal.SIGKILL)
            try:
                os.killpg(r["pgid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def proc_stat(pid):
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return {"state": fields[0], "ppid": int(fields[1]), "pgid": int(fields[2])}


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st["state"] != "Z"


def group_members(pgid):
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = proc_stat(int(d.name))
            if st and st["pgid"] == pgid and st["state"] != "Z":
                pids.append(int(d.name))
    return pids


def wait_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


# ---- the command line ------------------------------------------------------

def test_help_lists_serve_and_documents_options():
    top = subprocess.run([DYN_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert top.returncode == 0 and "serve" in top.stdout
    r = subprocess.run([DYN_BIN, "serve", "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    for opt in ["-f", "--dry-run", "--service-name", "--grace", "--gpu-oversubscribe",
                "--no-gpu-alloc", "--Service.key=value", "DYN_PYTHON", "DYN_GPU_COUNT"]:
        assert opt in r.stdout, opt


def test_usage_errors(fake):
    assert fake.run().returncode == 2
    r = fake.run(fake.target, "--bogus")
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr
    r = fake.run("graph.py")  # no :Service
    assert r.returncode != 0 and "FILE.py:Service" in r.stderr
    r = fake.run(fake.target, "--grace", "soon")
    assert r.returncode == 2 and "--grace" in r.stderr


# ---- configuration -----------------------------------------------------------

def test_config_merge_yaml_and_overrides(fake):
    cfg = fake.yaml("""
        Common:
          model: llama          # a comment
        Frontend:
          port: 8000
          tags: [a, "b", 3]
        Backend:
          ServiceArgs:
            workers: 1
          temperature: 0.5
          enabled: yes          # YAML 1.2: a string, not a boolean
          quoted: "42"
          nothing: ~
          flag: true
          hex: 0x1F
          base: &base {a: 1, b: 2}
          derived: {<<: *base, b: 3}
          empty:
        Middle:
    """)
    r = fake.run(fake.target, "-f", cfg, "--dry-run",
                 "--Backend.ServiceArgs.workers=3",   # overrides the file
                 "--Backend.temperature=0.7",
                 "--Frontend.name=plain",             # not JSON: a string
                 '--Frontend.label="42"',             # JSON string
                 "--Frontend.list=[1,2]",
                 "--Frontend.on=false",
                 "--Middle.deep.er.key=null",         # creates the nested mappings
                 "--Frontend.port=9000", "--Frontend.port=9001")  # the last one wins
    assert r.returncode == 0, r.stderr
    expected = {
        "Common": {"model": "llama"},
        "Frontend": {"port": 9001, "tags": ["a", "b", 3], "name": "plain", "label": "42",
                     "list": [1, 2], "on": False},
        "Backend": {"ServiceArgs": {"workers": 3}, "temperature": 0.7, "enabled": "yes",
                    "quoted": "42", "nothing": None, "flag": True, "hex": 31,
                    "base": {"a": 1, "b": 2}, "derived": {"a": 1, "b": 3}, "empty": None},
        "Middle": {"deep": {"er": {"key": None}}},
    }
    seen = fake.plan_seen()
    assert seen["config"] == expected
    assert seen["file"] == cfg
    # The resolver applied the merged workers=3.
    assert "Backend.2:" in r.stdout and "Backend.3:" not in r.stdout


def test_override_into_a_scalar_is_an_error(fake):
    cfg = fake.yaml("Frontend:\n  port: 8000\n")
    r = fake.run(fake.target, "-f", cfg, "--dry-run", "--Frontend.port.x=1")
    assert r.returncode != 0
    assert "Frontend.port" in r.stderr and "not a mapping" in r.stderr


@pytest.mark.parametrize("text,needles", [
    ("Frontend:\n  port: 8000\nBackend:\n  list: [1, 2\n  other: 3\n", ["bad.yaml:5:"]),
    ("Frontend:\n  a: 1\n   b: 2\n", ["bad.yaml:3:"]),
    ("- Frontend\n- Backend\n", ["bad.yaml", "top level must be a mapping"]),
    ("Frontend:\n  port: 1\nBackend: 12\n", ["bad.yaml:3", "section 'Backend'", "mapping"]),
    ("Frontend:\n  port: 1\n  port: 2\n", ["bad.yaml:3", "duplicate key 'port'"]),
    ("Frontend: *nowhere\n", ["bad.yaml:1", "unknown alias"]),
])
def test_bad_yaml_names_file_and_line(fake, text, needles):
    (fake.root / "bad.yaml").write_text(text)
    r = fake.run(fake.target, "-f", "bad.yaml", "--dry-run")
    assert r.returncode == 1, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)
    assert not (fake.rec / "plan.json").exists()  # nothing ran


@pytest.mark.parametrize("text,key,why", [
    ("Frontend:\n  port: \"eighty\"\n", "'port'", 'port number (0-65535), not "eighty"'),
    ("Frontend:\n  port: 70000\n", "'port'", "port number"),
    ("Frontend:\n  host: [1]\n", "'host'", "a string"),
    ("Backend:\n  ServiceArgs:\n    workers: x\n", "'ServiceArgs.workers'", "integer >= 1"),
    ("Backend:\n  ServiceArgs:\n    workers: 0\n", "'ServiceArgs.workers'", "integer >= 1"),
    ("Backend:\n  ServiceArgs:\n    resources: {gpu: two}\n", "'ServiceArgs.resources.gpu'",
     "whole number of GPUs"),
    ("Backend:\n  ServiceArgs:\n    resources: {cpu: [1]}\n", "'ServiceArgs.resources.cpu'",
     "quantity"),
    ("Backend:\n  ServiceArgs:\n    envs: {A: 1}\n", "'ServiceArgs.envs'", "list of {name"),
    ("Backend:\n  ServiceArgs:\n    replicas: 2\n", "'ServiceArgs.replicas'", "unknown"),
    ("Middle:\n  common-configs: model\n", "'common-configs'", "list of Common keys"),
])
def test_config_value_of_the_wrong_type_names_file_service_and_key(fake, text, key, why):
    (fake.root / "bad.yaml").write_text(text)
    r = fake.run(fake.target, "-f", "bad.yaml", "--dry-run")
    assert r.returncode == 1, r.stderr
    service = text.split(":")[0]
    assert f"bad.yaml: service {service}, key {key}: " in r.stderr, r.stderr
    assert why in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (fake.rec / "plan.json").exists()  # refused before the resolver ran


def test_override_of_the_wrong_type_names_the_command_line(fake):
    cfg = fake.yaml("Frontend:\n  port: 8000\n")
    r = fake.run(fake.target, "-f", cfg, "--Frontend.port=eighty", "--dry-run")
    assert r.returncode == 1
    assert "the command line" in r.stderr and "service Frontend, key 'port'" in r.stderr
    r = fake.run(fake.target, "--Backend.ServiceArgs.workers=x", "--dry-run")
    assert r.returncode == 1 and "key 'ServiceArgs.workers'" in r.stderr
    r = fake.run(fake.target, "-f", cfg, "--Frontend.port=9000", "--dry-run")
    assert r.returncode == 0, r.stderr


def test_missing_config_file(fake):
    r = fake.run(fake.target, "-f", "nope.yaml", "--dry-run")
    assert r.returncode == 1 and "nope.yaml" in r.stderr


# ---- resolution --------------------------------------------------------------

def test_resolver_failure_shows_its_stderr(fake):
    r = fake.run("missing.py:Frontend", "--dry-run")
    assert r.returncode == 1
    assert "fake-plan error: no graph file missing.py" in r.stderr
    assert "resolving missing.py:Frontend failed" in r.stderr


def test_a_graph_that_blocks_while_importing_is_given_up_on(fake):
    (fake.root / "blocks.py").write_text("import time\ntime.sleep(1000)\n")
    t0 = time.monotonic()
    r = fake.run("blocks.py:Frontend", "--dry-run", env={"DYN_GRAPH_TIMEOUT": "3"}, timeout=20)
    took = time.monotonic() - t0
    assert r.returncode == 1 and 2.5 < took < 10, (took, r.stderr)
    assert "loading the graph blocks.py:Frontend: still importing it" in r.stderr, r.stderr
    assert "loading the graph took longer than 3 s" in r.stderr, r.stderr
    # The flag wins over the environment; a bad value is a usage error.
    t0 = time.monotonic()
    r = fake.run("blocks.py:Frontend", "--graph-timeout", "0.5", env={"DYN_GRAPH_TIMEOUT": "100"},
                 timeout=20)
    assert r.returncode == 1 and time.monotonic() - t0 < 5, r.stderr
    assert "longer than 0.5 s" in r.stderr and "still importing" not in r.stderr, r.stderr
    r = fake.run("blocks.py:Frontend", "--graph-timeout", "soon")
    assert r.returncode == 2 and "--graph-timeout 'soon'" in r.stderr
    r = fake.run("blocks.py:Frontend", env={"DYN_GRAPH_TIMEOUT": "-1"})
    assert r.returncode == 1 and "$DYN_GRAPH_TIMEOUT '-1'" in r.stderr
    # A graph that loads in time is not held up by the limit.
    r = fake.run(fake.target, "--dry-run", "--graph-timeout", "20")
    assert r.returncode == 0 and "still importing" not in r.stderr, r.stderr


def test_missing_python(fake):
    r = fake.run(fake.target, "--dry-run", env={"DYN_PYTHON": "/nonexistent/python"})
    assert r.returncode == 1 and "DYN_PYTHON" in r.stderr


def test_c_target_goes_to_the_c_resolver(fake):
    r = fake.run("nothing.so:Svc", "--dry-run")
    assert r.returncode == 1
    assert "nothing.so" in r.stderr
    assert not (fake.rec / "plan.json").exists()  # Python was not asked


# ---- --dry-run, --service-name, GPUs ------------------------------------------

def test_dry_run_prints_graph_config_and_processes(fake):
    r = fake.run(fake.target, "--dry-run", "--Frontend.x=1")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "graph: graph.py:Frontend (python), entry Frontend" in out
    assert "Frontend -> Middle" in out and "Middle -> Backend" in out
    assert '"x": 1' in out
    assert "HTTP 0.0.0.0:8000" in out
    assert (f'Frontend.0: CUDA_VISIBLE_DEVICES="" {sys.executable} -m dynamo.sdk.worker '
            f"graph.py:Frontend --service Frontend") in out
    assert 'Backend.0: CUDA_VISIBLE_DEVICES="0" ' in out
    assert 'Backend.1: CUDA_VISIBLE_DEVICES="1" ' in out
    assert "processes (4)" in out
    # Nothing was started: no worker ran, no control-plane directory was made.
    assert not list(fake.rec.glob("*.starts"))
    assert not list(fake.root.glob("dynamo-serve-*"))


def test_service_name(fake):
    r = fake.run(fake.target, "--dry-run", "--service-name", "Backend")
    assert r.returncode == 0, r.stderr
    assert "processes (2)" in r.stdout and "Frontend.0:" not in r.stdout
    r = fake.run(fake.target, "--dry-run", "--service-name=Nope")
    assert r.returncode == 1
    assert "Nope" in r.stderr and "Frontend, Middle, Backend" in r.stderr


def test_gpu_over_ask(fake):
    r = fake.run(fake.target, "--dry-run", env={"DYN_GPU_COUNT": "1"})
    assert r.returncode == 1
    assert "asks for 2 GPUs but this machine has 1" in r.stderr
    assert "Backend: 2 workers x 1 GPU = 2" in r.stderr
    assert "--gpu-oversubscribe" in r.stderr
    r = fake.run(fake.target, "--dry-run", "--gpu-oversubscribe", env={"DYN_GPU_COUNT": "1"})
    assert r.returncode == 0, r.stderr
    assert 'Backend.0: CUDA_VISIBLE_DEVICES="0"' in r.stdout
    assert 'Backend.1: CUDA_VISIBLE_DEVICES="0"' in r.stdout
    r = fake.run(fake.target, "--dry-run", "--no-gpu-alloc", env={"DYN_GPU_COUNT": "1"})
    assert r.returncode == 0, r.stderr
    assert "CUDA_VISIBLE_DEVICES" not in r.stdout.split("processes")[1].split("GPUs:")[0]


def test_gpus_from_cuda_visible_devices(fake):
    env = {"DYN_GPU_COUNT": "", "CUDA_VISIBLE_DEVICES": "5,7"}
    r = fake.run(fake.target, "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert 'Backend.0: CUDA_VISIBLE_DEVICES="5"' in r.stdout
    assert 'Backend.1: CUDA_VISIBLE_DEVICES="7"' in r.stdout


def test_gpus_from_nvidia_smi(fake):
    bin_dir = fake.root / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)'\n"
                   "echo '  MIG 1g.10gb     Device  0: (UUID: MIG-bbbb)'\n"
                   "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)'\n")
    smi.chmod(0o755)
    env = {"DYN_GPU_COUNT": "", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = fake.run(fake.target, "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert "GPUs: 2 (nvidia-smi -L)" in r.stdout
    assert 'Backend.1: CUDA_VISIBLE_DEVICES="1"' in r.stdout
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    r = fake.run(fake.target, "--dry-run", env=env)
    assert r.returncode == 1 and "this machine has 0" in r.stderr


# ---- running -------------------------------------------------------------------

def test_run_logs_env_restart_and_sigterm(fake):
    cfg = fake.yaml("""
        Frontend:
          fake: {child: true}
        Middle:
          fake: {crash_once: true}
        Backend:
          fake: {long: true}
    """)
    g = fake.start(fake.target, "-f", cfg)
    try:
        g.wait_for("the startup line", lambda: "worker process(es)" in g.out())
        g.wait_for("4 workers and 1 restart", lambda: len(fake.records()) == 5, timeout=10)
        g.wait_for("the restarted Middle's output",
                   lambda: g.out().count("[Middle.0] hello from Middle.0") == 2)
        g.wait_for("stderr lines", lambda: g.err().count("] warning from") == 5)
        out, err = g.out(), g.err()
        assert "dynamo serve: 4 worker process(es) for 3 service(s)" in out
        assert "Frontend HTTP: http://127.0.0.1:8000" in out and "0.0.0.0" in out
        for label in ["Frontend.0", "Middle.0", "Backend.0", "Backend.1"]:
            assert f"[{label}] hello from {label}\n" in out
            assert f"[{label}] warning from {label}\n" in err
        # A partial line is flushed, with its prefix, when its worker exits.
        assert "[Middle.0] partial line before the crash\n" in out
        assert "Middle.0 exited (exit status 4); restarting in 0.5 s" in err
        # A 100000-byte line comes out whole, in prefixed pieces.
        for b in ["Backend.0", "Backend.1"]:
            pieces = [l for l in out.splitlines() if l.startswith(f"[{b}] L")]
            assert sum(len(l) - len(f"[{b}] ") for l in pieces) == 100000
        # Every line of the output is prefixed (or is the supervisor's own).
        for line in out.splitlines():
            assert line.startswith("[") or line.startswith("dynamo serve:") or " HTTP: " in line

        sup = g.proc.pid
        recs = fake.records()
        sock = recs[0]["env"]["DYN_CONTROL_SOCKET"]
        for r in recs:
            name, idx = r["env"]["DYN_SERVICE_NAME"], r["env"]["DYN_WORKER_INDEX"]
            assert r["socket_ok"] is True, r["socket_ok"]
            assert r["env"]["DYN_CONTROL_SOCKET"] == sock
            assert r["env"]["DYN_SUPERVISOR_PID"] == str(sup)
            assert r["ppid"] == sup
            assert r["pgid"] == r["pid"] and r["sid"] == r["pid"]  # own session and group
            assert r["argv"][1:] == ["graph.py:Frontend", "--service", name]
            assert r["config"]["Middle"] == {"fake": {"crash_once": True}}
            assert r["env"]["MY_ENV"] == ("front" if name == "Frontend" else None)
            want_cuda = {"Frontend": "", "Middle": ""}.get(name, idx)
            assert r["env"]["CUDA_VISIBLE_DEVICES"] == want_cuda
        assert Path(sock).parent.parent == fake.root  # in a fresh directory under TMPDIR
        assert os.path.exists(sock)

        front = fake.records("Frontend.0")[0]
        assert alive(front["child"]) and proc_stat(front["child"])["pgid"] == front["pgid"]
        live = [r["pid"] for r in recs if alive(r["pid"])]
        assert len(live) == 4  # the crashed Middle is gone, its restart is not

        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        assert g.wait_exit(timeout=12) == 0
        assert time.monotonic() - t0 < 10
        assert wait_gone(live + [front["child"]], timeout=1) == []
        for r in recs:
            assert group_members(r["pgid"]) == []
        assert not os.path.exists(Path(sock).parent)  # the control dir is removed
        assert "SIGTERM: stopping 4 worker process(es)" in g.err()
    finally:
        g.kill()


def test_grace_then_sigkill(fake):
    cfg = fake.yaml("""
        Backend:
          ServiceArgs: {workers: 1}
          fake: {ignore_term: true, child: true, escape: true}
    """)
    g = fake.start(fake.target, "-f", cfg, "--service-name", "Backend", "--grace", "1")
    try:
        g.wait_for("the worker", lambda: len(fake.records()) == 1)
        r = fake.records()[0]
        assert alive(r["child"]) and alive(r["escaped"])
        assert proc_stat(r["escaped"])["pgid"] != r["pgid"]  # it left the group
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGINT)
        assert g.wait_exit(timeout=8) == 0
        took = time.monotonic() - t0
        assert 0.9 <= took < 6, took
        assert wait_gone([r["pid"], r["child"], r["escaped"]], timeout=1) == []
        assert group_members(r["pgid"]) == []
        assert "grace period (1 s) is over" in g.err()
    finally:
        g.kill()


def test_second_sigint_kills_at_once(fake):
    cfg = fake.yaml("""
        Middle:
          fake: {ignore_term: true}
    """)
    g = fake.start(fake.target, "-f", cfg, "--service-name", "Middle", "--grace", "30")
    try:
        g.wait_for("the worker", lambda: len(fake.records()) == 1)
        pid = fake.records()[0]["pid"]
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGINT)
        g.wait_for("the stop message", lambda: "SIGINT: stopping" in g.err(), timeout=5)
        time.sleep(0.3)
        assert alive(pid)  # it ignores SIGTERM and has 30 s
        g.proc.send_signal(signal.SIGINT)
        assert g.wait_exit(timeout=8) == 0
        assert time.monotonic() - t0 < 6
        assert wait_gone([pid], timeout=1) == []
        assert "killing the workers now" in g.err()
    finally:
        g.kill()


def test_crash_backoff_then_give_up(fake):
    cfg = fake.yaml("""
        Backend:
          ServiceArgs: {workers: 1}
          fake: {crash_always: true, child: true}
        Frontend:
          fake: {child: true}
    """)
    g = fake.start(fake.target, "-f", cfg)
    try:
        code = g.wait_exit(timeout=25)
        err = g.err()
        assert code == 1, err
        assert ("dynamo serve: Backend.0 keeps crashing (exit status 3); stopping the graph"
                in err)
        for delay in ["0.5", "1", "2", "4"]:
            assert f"Backend.0 exited (exit status 3); restarting in {delay} s" in err
        starts = fake.starts("Backend.0")
        assert len(starts) == 5
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        for gap, want in zip(gaps, [0.5, 1, 2, 4]):
            assert want <= gap < want + 1.5, gaps
        # The rest of the graph was stopped, and nothing of it is left.
        pids = [r["pid"] for r in fake.records()] + [r["child"] for r in fake.records()]
        assert wait_gone(pids, timeout=2) == []
    finally:
        g.kill()


def test_c_graph_workers_are_dynamo_worker(fake):
    """With the C hello-world example built next to the binary, a C target
    resolves through dyn__c_plan and its workers are `dynamo worker`."""
    lib = Path(DYN_BIN).parent / "examples" / "hello_world_c" / "libhello_services.so"
    assert lib.exists(), f"{lib} is not built"
    r = fake.run(f"{lib}:Middle", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "graph: " in r.stdout and "(C)" in r.stdout
    assert f"Middle.0: CUDA_VISIBLE_DEVICES=\"\" {os.path.realpath(DYN_BIN)} worker {lib}:Middle --service Middle" \
        in r.stdout
    assert not (fake.rec / "plan.json").exists()  # Python was not asked
