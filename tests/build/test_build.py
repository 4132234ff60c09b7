"""`dynamo build`: the artifact's layout and manifest, link() pruning,
byte-identical archives, `dynamo serve ARTIFACT`, and --containerize."""

import gzip
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import pytest
import yaml

from conftest import (C_HELLO, DYN_BIN, GRAPHS, HELLO, ROOT, SLOW_C, descendants, dynamo,
                      env_for_tests, free_port)


def build(*args, env=None, cwd=None):
    r = dynamo("build", *args, env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    return lines[1].strip(), lines[2].strip()  # the directory and the .tar.gz


def manifest(d):
    with open(os.path.join(d, "dynamo.yaml")) as f:
        return yaml.safe_load(f)


@pytest.fixture
def hello_src(tmp_path):
    """A copy of examples/hello_world with junk a build must leave out."""
    src = tmp_path / "hello"
    shutil.copytree(HELLO, src)
    (src / "__pycache__").mkdir(exist_ok=True)
    (src / "__pycache__" / "hello_world.cpython-311.pyc").write_bytes(b"junk")
    (src / "stale.pyc").write_bytes(b"junk")
    return src


def test_build_writes_the_artifact(hello_src, tmp_path):
    d, tgz = build(f"{hello_src}/hello_world.py:Frontend", "-f", hello_src / "config.yaml",
                   "-o", tmp_path / "out")
    assert os.path.isdir(d) and os.path.isfile(tgz) and tgz == d + ".tar.gz"
    m = manifest(d)
    assert m["name"] == "frontend" and m["entry"] == "Frontend" and m["kind"] == "python"
    assert os.path.basename(d) == f"frontend-{m['version']}"
    assert m["target"] == "hello_world.py:Frontend"
    svcs = {s["name"]: s for s in m["services"]}
    assert set(svcs) == {"Frontend", "Middle", "Backend"}
    assert svcs["Backend"]["workers"] == 2 and svcs["Backend"]["config"]["message"] == "back"
    assert svcs["Backend"]["endpoints"] == ["generate"] and svcs["Backend"]["http"] is None
    assert svcs["Frontend"]["http"] == {"host": "0.0.0.0", "port": 8000,
                                        "routes": [{"method": "POST", "path": "/generate"}]}
    assert svcs["Frontend"]["resources"] == {"cpu": "1", "memory": "1Gi", "gpu": 0}
    assert svcs["Middle"]["dependencies"] == ["Backend"]
    assert sorted(map(tuple, m["edges"])) == [("Frontend", "Middle"), ("Middle", "Backend")]
    with open(os.path.join(d, "config.yaml")) as f:
        assert yaml.safe_load(f) == yaml.safe_load((hello_src / "config.yaml").read_text())
    files = sorted(os.listdir(os.path.join(d, "src")))
    assert "hello_world.py" in files and "__pycache__" not in files and "stale.pyc" not in files
    dockerfile = open(os.path.join(d, "env", "docker", "Dockerfile")).read()
    assert "FROM ${DYNAMO_IMAGE}" in dockerfile and "dynamo serve /app" in dockerfile
    assert "--service-name" in dockerfile and "EXPOSE 8000" in dockerfile
    assert "dynamo deploy" in open(os.path.join(d, "README.md")).read()


def test_link_pruned_edges_are_not_in_the_manifest(tmp_path):
    d, _ = build(f"{GRAPHS}/pruned.py:Gateway", "-o", tmp_path)
    m = manifest(d)
    assert sorted(s["name"] for s in m["services"]) == ["Gateway", "Worker"]
    assert m["edges"] == [["Gateway", "Worker"]]
    gw = next(s for s in m["services"] if s["name"] == "Gateway")
    assert gw["dependencies"] == ["Worker"]
    assert "Spare" not in open(os.path.join(d, "dynamo.yaml")).read()


def test_c_graph_packs_its_shared_object(tmp_path):
    d, _ = build(f"{C_HELLO}:Frontend", "-o", tmp_path)
    m = manifest(d)
    assert m["kind"] == "c" and m["target"] == "libhello_services.so:Frontend"
    assert os.listdir(os.path.join(d, "src")) == ["libhello_services.so"]


def test_c_graph_from_a_linked_shared_object(tmp_path):
    # CMake's layout: libfoo.so -> libfoo.so.1. The artifact keeps the name
    # given (a C target must end in .so) and the bytes the link leads to.
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(C_HELLO, lib / "libhello_services.so.1")
    os.symlink("libhello_services.so.1", lib / "libhello_services.so")
    d, tgz = build("lib/libhello_services.so:Frontend", "-o", tmp_path / "out", cwd=tmp_path)
    m = manifest(d)
    assert m["target"] == "libhello_services.so:Frontend"
    packed = os.path.join(d, "src", "libhello_services.so")
    assert os.listdir(os.path.join(d, "src")) == ["libhello_services.so"]
    assert not os.path.islink(packed) and open(packed, "rb").read() == open(C_HELLO, "rb").read()
    r = dynamo("serve", tgz, "--dry-run", env=env_for_tests(TMPDIR=tmp_path))
    assert r.returncode == 0 and "libhello_services.so:Frontend (C)" in r.stdout, r.stderr


def test_a_linked_graph_file_is_refused_clearly(tmp_path):
    # The graph's directory is packed without following links, so a linked
    # graph file would be missing from its own artifact.
    src = tmp_path / "src"
    shutil.copytree(HELLO, src)
    os.symlink(src / "hello_world.py", src / "linked.py")
    r = dynamo("build", f"{src}/linked.py:Frontend", "-f", src / "config.yaml", "-o", tmp_path / "o")
    assert r.returncode != 0 and "symbolic link" in r.stderr and "hello_world.py" in r.stderr


def test_output_in_the_graph_directory_is_not_packed(hello_src, tmp_path):
    # -o naming the graph's own directory: the build must not pack its
    # staging directory (it used to copy itself until "path too long"), nor
    # what earlier builds left there, nor an earlier output directory
    # under any name; the version stays that of the sources alone.
    target = f"{hello_src}/hello_world.py:Frontend"
    cfg = hello_src / "config.yaml"
    _, ref = build(target, "-f", cfg, "-o", tmp_path / "ref")
    _, first = build(target, "-f", cfg, "-o", hello_src)
    _, again = build(target, "-f", cfg, "-o", hello_src)
    _, inner = build(target, "-f", cfg, "-o", hello_src / "old-output")
    _, other = build(target, "-f", cfg, "-o", tmp_path / "other")
    name = os.path.basename(ref)
    for tgz in (first, again, inner, other):
        assert os.path.basename(tgz) == name
        with tarfile.open(tgz) as t:
            src = sorted(n.split("/src/", 1)[1] for n in t.getnames() if "/src/" in n)
        assert src == ["config.yaml", "hello_world.py", "run.sh"], (tgz, src)
    assert open(other, "rb").read() == open(ref, "rb").read()


def test_the_umask_changes_nothing(hello_src, tmp_path):
    # With umask 0177 the staged run.sh lost its exec bit, so the archive
    # said 0644 while the version (hashed from the source's mode) stayed.
    target = f"{hello_src}/hello_world.py:Frontend"
    cfg = hello_src / "config.yaml"
    _, ref = build(target, "-f", cfg, "-o", tmp_path / "ref")
    r = subprocess.run(["sh", "-c", 'umask 0177 && exec "$@"', "sh", DYN_BIN, "build", target,
                        "-f", str(cfg), "-o", str(tmp_path / "tight")],
                       capture_output=True, text=True, env=env_for_tests(), timeout=60)
    assert r.returncode == 0, r.stderr
    tight = r.stdout.splitlines()[2].strip()
    with tarfile.open(tight) as t:
        modes = {m.name.split("/", 1)[-1]: m.mode for m in t.getmembers()}
    assert modes["src/run.sh"] == 0o755 and modes["src/hello_world.py"] == 0o644
    assert open(tight, "rb").read() == open(ref, "rb").read()
    staged = os.path.join(tight[: -len(".tar.gz")], "src", "run.sh")
    assert os.stat(staged).st_mode & 0o777 == 0o755


def test_a_c_service_s_library_path_is_not_in_the_artifact(tmp_path):
    # A Python graph with a C service: the library's directory on the build
    # machine neither shows in the manifest nor changes the version.
    g = tmp_path / "g"
    g.mkdir()
    (g / "graph.py").write_text(
        "import os\nfrom dynamo.sdk import c_service\n"
        "SlowC = c_service(os.environ['SLOW_SO'], 'SlowC', 'slow', endpoints={'ping': True})\n")
    versions = set()
    for where in ("a", "b/c"):
        lib = tmp_path / where
        lib.mkdir(parents=True)
        shutil.copy(SLOW_C, lib / "libslow_start.so")
        d, _ = build(f"{g}/graph.py:SlowC", "-o", tmp_path / f"out-{where[0]}",
                     env=env_for_tests(SLOW_SO=lib / "libslow_start.so"))
        m = manifest(d)
        assert m["services"][0]["c_target"] == "libslow_start.so:SlowC"
        versions.add(m["version"])
    assert len(versions) == 1


def test_two_builds_give_identical_archives(hello_src, tmp_path):
    target = f"{hello_src}/hello_world.py:Frontend"
    cfg = hello_src / "config.yaml"
    _, a = build(target, "-f", cfg, "-o", tmp_path / "one")
    for root, dirs, files in os.walk(hello_src):  # new mtimes, new junk
        for name in files + dirs:
            os.utime(os.path.join(root, name), (1e9, 1.5e9))
    (hello_src / "__pycache__" / "other.pyc").write_bytes(b"more junk")
    _, b = build(target, "-f", cfg, "-o", tmp_path / "two")
    assert os.path.basename(a) == os.path.basename(b)
    assert open(a, "rb").read() == open(b, "rb").read()
    raw = open(a, "rb").read()
    assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # no gzip mtime, no file name
    with tarfile.open(a) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    assert names[0] == os.path.basename(a)[: -len(".tar.gz")]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert all(m.mode in (0o644, 0o755) for m in members)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # A change to a source is a new version.
    with open(hello_src / "hello_world.py", "a") as f:
        f.write("\n# changed\n")
    _, c = build(target, "-f", cfg, "-o", tmp_path / "three")
    assert os.path.basename(c) != os.path.basename(a)


def _post(port, path, body, timeout=15.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read().decode()
    conn.close()
    return r.status, data


@pytest.mark.parametrize("form", ["dir", "tar.gz"])
def test_serve_artifact_answers_hello_world(serve, hello_src, tmp_path, form):
    _, tgz = build(f"{hello_src}/hello_world.py:Frontend", "-f", hello_src / "config.yaml",
                   "-o", tmp_path / "out")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(tgz, elsewhere)
    shutil.rmtree(tmp_path / "out")
    shutil.rmtree(hello_src)  # the artifact must not need the sources
    if form == "dir":
        with tarfile.open(elsewhere / os.path.basename(tgz)) as t:
            t.extractall(elsewhere)
        target = elsewhere / os.path.basename(tgz)[: -len(".tar.gz")]
    else:
        target = elsewhere / os.path.basename(tgz)
    unpack = tmp_path / "tmp"
    unpack.mkdir()
    port = free_port()
    s = serve(target, f"--Frontend.port={port}", env=env_for_tests(TMPDIR=unpack))
    s.wait_for("Frontend ready")
    s.wait_for("Middle ready")
    s.wait_for("Backend ready")
    if form == "tar.gz":
        assert len(os.listdir(unpack)) >= 1  # unpacked here while it runs
    workers = descendants(s.proc.pid)
    assert len(workers) >= 4
    status, body = _post(port, "/generate", json.dumps({"text": "hello world"}))
    assert status == 200
    events = [json.loads(x[len("data: "):]) for x in body.splitlines() if x.startswith("data: ")]
    assert events == ["Frontend: Middle: Backend: hello", "Frontend: Middle: Backend: world-mid-back"]
    assert s.stop() == 0
    assert not descendants(s.proc.pid) and not any(os.path.exists(f"/proc/{p}") and
                                                   open(f"/proc/{p}/stat").read().split()[2] != "Z"
                                                   for p in workers)
    assert not [p for p in os.listdir(unpack) if p.startswith("dynamo-artifact-")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_startup_leaves_no_unpacked_directory(hello_src, tmp_path, sig):
    # Between unpacking the .tar.gz and the supervisor's own handlers,
    # serve resolves the graph (a Python process, slowed down here): a
    # signal then must still remove $TMPDIR/dynamo-artifact-XXXXXX, and end
    # serve as the signal would have. The slowed resolver says when it has
    # started and then sleeps far longer than any test waits, so the signal
    # lands during the resolution however loaded the machine is (a fixed
    # pause here, against a resolver asleep for 3 s, could miss it).
    _, tgz = build(f"{hello_src}/hello_world.py:Frontend", "-f", hello_src / "config.yaml",
                   "-o", tmp_path / "out")
    unpack = tmp_path / "tmp"
    unpack.mkdir()
    started = tmp_path / "resolver-started"
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\n: > "{started}"\nsleep 50\nexec "{sys.executable}" "$@"\n')
    slow.chmod(0o755)
    p = subprocess.Popen([DYN_BIN, "serve", tgz, "--dry-run"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True,
                         env=env_for_tests(TMPDIR=unpack, DYN_PYTHON=slow))
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not started.exists() and p.poll() is None:
            time.sleep(0.01)
        assert started.exists(), "the resolver never started"
        assert list(unpack.glob("dynamo-artifact-*/*/dynamo.yaml")), "never unpacked"
        assert p.poll() is None
        p.send_signal(sig)
        assert p.wait(10) == -sig
        assert list(unpack.iterdir()) == []
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the slowed resolver, if still asleep
        except ProcessLookupError:
            pass
        if p.poll() is None:
            p.wait(5)


def test_serve_takes_a_hand_made_archive(tmp_path):
    assert shutil.which("tar"), "tar is missing"
    # `tar czf a.tgz -C ARTIFACT .` names every entry "./...".
    d, _ = build(f"{GRAPHS}/slow.py:Slow", "-o", tmp_path / "out")
    hand = tmp_path / "hand.tgz"
    subprocess.run(["tar", "czf", hand, "-C", d, "."], check=True)
    r = dynamo("serve", hand, "--dry-run", env=env_for_tests(TMPDIR=tmp_path))
    assert r.returncode == 0 and "Slow" in r.stdout, r.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith("dynamo-artifact-")]


def test_serve_refuses_a_broken_archive(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(b"not a tar file at all" * 30))
    r = dynamo("serve", bad, "--dry-run", env=env_for_tests(TMPDIR=tmp_path))
    assert r.returncode != 0 and "bad.tar.gz" in r.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith("dynamo-artifact-")]


def test_containerize_without_a_builder_says_what_is_missing(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    r = dynamo("build", f"{GRAPHS}/slow.py:Slow", "-o", tmp_path / "out", "--containerize",
               env=env_for_tests(PATH=empty))
    assert r.returncode != 0
    for word in ("docker is not on PATH", "podman is not on PATH", "buildah is not on PATH"):
        assert word in r.stderr, r.stderr
    assert os.path.isdir(r.stdout.splitlines()[1].strip())  # the artifact itself was built


def test_containerize_with_a_docker_that_has_no_daemon(tmp_path):
    # A docker CLI whose `docker info` fails, as one without a daemon does
    # (the real CLI, where installed, with DOCKER_HOST at a dead socket; a
    # stand-in elsewhere), and no podman or buildah.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = shutil.which("docker")
    fake = bin_dir / "docker"
    if docker:
        fake.symlink_to(docker)
    else:
        fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
        fake.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    r = dynamo("build", f"{GRAPHS}/slow.py:Slow", "-o", tmp_path / "out", "--containerize",
               env=env_for_tests(DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock", PATH=path))
    assert r.returncode != 0
    assert "daemon does not answer" in r.stderr, r.stderr



def test_llm_graph_artifact_serves_chat_completions(serve, tmp_path):
    # The flagship graph: C services from libdynamo_llm.so declared in
    # Python, a tokenizer kept beside the graph file. Built, moved away
    # from the sources and served from the archive in another directory.
    llm = ROOT / "examples" / "llm"
    _, tgz = build(f"{llm}/graphs/agg_router.py:Frontend", "-f", llm / "configs" / "agg_router.yaml",
                   "-o", tmp_path / "out")
    with tarfile.open(tgz) as t:
        names = t.getnames()
    assert any(n.endswith("/src/tokenizer.json") for n in names)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(tgz, elsewhere)
    port = free_port()
    s = serve(elsewhere / os.path.basename(tgz), f"--Frontend.port={port}",
              "--Worker.ServiceArgs.workers=1")
    s.wait_for("Processor ready")
    s.wait_for("Router ready")
    s.wait_for("Worker ready")
    deadline = time.time() + 60
    while True:
        status, body = _post(port, "/v1/chat/completions", json.dumps(
            {"model": "dynamo-sim", "max_tokens": 4,
             "messages": [{"role": "user", "content": "hello"}]}))
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.1)  # 503 until the Frontend sees the worker
    assert status == 200, body
    reply = json.loads(body)
    assert reply["object"] == "chat.completion" and reply["usage"]["completion_tokens"] == 4
    assert s.stop() == 0


def test_llama_graph_names_its_model_and_does_not_pack_it(tmp_path):
    """dynamo build of agg_router_llama: the manifest names the model the
    configs point to (smollm2-135m, found in $DYN_MODEL_DIR as the workers
    find it) with its size and sha256, computed from the file; no .gguf is
    packed, not even one lying beside the graph; a model that is not there
    fails the build naming the file and how to fetch it."""
    import hashlib
    llm = ROOT / "examples" / "llm"
    src = tmp_path / "graphs"
    shutil.copytree(llm / "graphs", src)
    (src / "stray.gguf").write_bytes(b"GGUF a model beside the graph")
    models = tmp_path / "models"
    models.mkdir()
    weights = b"GGUF" + bytes(range(256)) * 1000
    (models / "smollm2-135m.gguf").write_bytes(weights)
    env = env_for_tests(DYN_MODEL_DIR=models)
    d, tgz = build(f"{src}/agg_router.py:Frontend", "-f", llm / "configs" / "agg_router_llama.yaml",
                   "-o", tmp_path / "out", env=env)
    m = manifest(d)
    assert m["models"] == [{"name": "smollm2-135m", "file": "smollm2-135m.gguf",
                            "bytes": len(weights),
                            "sha256": hashlib.sha256(weights).hexdigest(),
                            "services": ["Worker", "Processor", "Frontend"]}], m["models"]
    with tarfile.open(tgz) as t:
        names = t.getnames()
    assert not [n for n in names if n.endswith(".gguf")], names
    assert not [f for f in os.listdir(os.path.join(d, "src")) if f.endswith(".gguf")]
    assert hashlib.sha256(weights).hexdigest() in open(os.path.join(d, "README.md")).read()

    # Another model file is another artifact version.
    (models / "smollm2-135m.gguf").write_bytes(weights + b"!")
    d2, _ = build(f"{src}/agg_router.py:Frontend", "-f", llm / "configs" / "agg_router_llama.yaml",
                  "-o", tmp_path / "out", env=env)
    assert d2 != d

    # The simulated graph names no model (its "model" is a served name).
    d3, _ = build(f"{src}/agg.py:Frontend", "-f", llm / "configs" / "agg.yaml",
                  "-o", tmp_path / "out", env=env)
    assert manifest(d3)["models"] == []

    (models / "smollm2-135m.gguf").unlink()
    r = dynamo("build", f"{src}/agg_router.py:Frontend", "-f",
               llm / "configs" / "agg_router_llama.yaml", "-o", tmp_path / "out", env=env)
    assert r.returncode != 0
    assert f"{models}/smollm2-135m.gguf not found" in r.stderr, r.stderr
    assert "scripts/fetch_model.sh smollm2-135m" in r.stderr, r.stderr
