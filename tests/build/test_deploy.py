"""`dynamo deploy`: every object well formed and consistent with the
artifact, accepted by kubectl (typed decoding, and `kubectl apply
--dry-run=client` against a stand-in API server), and --apply's errors
without kubectl or without a cluster. scripts/deps.sh installs kubectl
(Debian's kubernetes-client) when there is none."""

import os
import re
import shutil
import subprocess
import time

import pytest
import yaml

from conftest import GRAPHS, HELLO, dynamo, env_for_tests, free_port
from fake_apiserver import FakeAPIServer

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# k8s.io/apimachinery resource.Quantity: sign, number, then a binary SI,
# decimal SI or exponent suffix.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
API = {"ConfigMap": "v1", "Service": "v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1"}


def build(target, out, *args):
    r = dynamo("build", target, "-o", out, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[1].strip()


def deploy(artifact, *args):
    r = dynamo("deploy", artifact, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout, list(yaml.safe_load_all(r.stdout))


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    return build(f"{HELLO}/hello_world.py:Frontend", tmp_path_factory.mktemp("hello"), "-f",
                 HELLO / "config.yaml")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    return build(f"{GRAPHS}/pruned.py:Gateway", tmp_path_factory.mktemp("pruned"))


def manifest(artifact):
    with open(os.path.join(artifact, "dynamo.yaml")) as f:
        return yaml.safe_load(f)


def check_well_formed(docs):
    """What the API server would check first, for every object."""
    names = set()
    for d in docs:
        assert d["apiVersion"] == API[d["kind"]], d
        md = d["metadata"]
        assert DNS1123.match(md["name"]) and len(md["name"]) <= 63, md["name"]
        assert (d["kind"], md["name"]) not in names
        names.add((d["kind"], md["name"]))
        labels = md["labels"]
        assert "app.kubernetes.io/name" in labels and "app.kubernetes.io/part-of" in labels
        assert all(LABEL_VALUE.match(v) and len(v) <= 63 for v in labels.values()), labels
        if d["kind"] == "Service":
            assert re.match(r"^[a-z]", md["name"])  # DNS-1035
    return names


def pod_templates(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs
            if d["kind"] in ("Deployment", "StatefulSet")}


def check_workloads(docs):
    for d in pod_templates(docs).values():
        spec = d["spec"]
        sel = spec["selector"]["matchLabels"]
        tmpl_labels = spec["template"]["metadata"]["labels"]
        assert sel.items() <= tmpl_labels.items()
        for c in spec["template"]["spec"]["containers"]:
            port_names = [p["name"] for p in c["ports"]]
            assert len(set(port_names)) == len(port_names)
            assert all(len(n) <= 15 and DNS1123.match(n) for n in port_names)
            assert all(1 <= p["containerPort"] <= 65535 for p in c["ports"])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    assert c[probe]["httpGet"]["port"] in port_names, (probe, c["ports"])
            for kind in ("requests", "limits"):
                for key, q in c.get("resources", {}).get(kind, {}).items():
                    assert QUANTITY.match(str(q)), (key, q)
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec["template"]["spec"].get("volumes", [])}


def check_services_select_pods(docs):
    pods = pod_templates(docs)
    for svc in (d for d in docs if d["kind"] == "Service"):
        matching = [w for w in pods.values()
                    if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matching) == 1, svc["metadata"]["name"]
        ports = {p["name"] for c in matching[0]["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports


def deployment_for(docs, service):
    for d in docs:
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            if c["command"][c["command"].index("--service-name") + 1] == service:
                return d, c
    raise AssertionError(f"no Deployment for {service}")


def test_hello_world_manifests(hello):
    m = manifest(hello)
    _, docs = deploy(hello, "--namespace", "demo")
    check_well_formed(docs)
    check_workloads(docs)
    check_services_select_pods(docs)
    assert all(d["metadata"]["namespace"] == "demo" for d in docs)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert ("StatefulSet", "frontend-dynamo-etcd") in kinds and ("StatefulSet", "frontend-dynamo-nats") in kinds
    assert ("Service", "frontend-dynamo-etcd") in kinds and ("Service", "frontend-dynamo-nats") in kinds
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert yaml.safe_load(cm["data"]["config.yaml"]) == yaml.safe_load((HELLO / "config.yaml").read_text())
    for svc in m["services"]:
        d, c = deployment_for(docs, svc["name"])
        assert d["spec"]["replicas"] == svc["workers"]
        assert c["image"] == f"frontend:{m['version']}"
        assert f"--{svc['name']}.ServiceArgs.workers=1" in c["command"]
        env = {e["name"]: e for e in c["env"]}
        assert env["ETCD_ENDPOINTS"]["value"] == "http://frontend-dynamo-etcd:2379"
        assert env["NATS_SERVER"]["value"] == "nats://frontend-dynamo-nats:4222"
        assert env["DYN_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert int(env["DYN_LISTEN_PORT"]["value"]) == ports["dynamo"]
        assert int(env["DYN_HEALTH_PORT"]["value"]) == ports["health"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/live"
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        # Prometheus scrapes every worker's /metrics on its health port.
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert ann == {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                       "prometheus.io/port": str(ports["health"])}
        cfg_volume = d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        assert cfg_volume == cm["metadata"]["name"]
        services = [s for s in docs if s["kind"] == "Service" and
                    s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        if svc["http"]:
            assert ports["http"] == svc["http"]["port"] == 8000
            assert [p["port"] for p in services[0]["spec"]["ports"]] == [8000]
        else:
            assert services == [] and "http" not in ports
    _, fe = deployment_for(docs, "Frontend")
    assert fe["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"},
                               "limits": {"cpu": "1", "memory": "1Gi"}}
    assert "nvidia.com/gpu" not in str(docs)


def test_gpus_quantities_and_pruning(pruned):
    _, docs = deploy(pruned, "--image", "registry.example/pruned:1")
    check_well_formed(docs)
    check_workloads(docs)
    check_services_select_pods(docs)
    assert "spare" not in yaml.safe_dump_all(docs).lower()  # link() pruned it
    d, c = deployment_for(docs, "Worker")
    assert d["spec"]["replicas"] == 3
    assert c["image"] == "registry.example/pruned:1"
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi", "nvidia.com/gpu": 1}
    assert c["resources"]["requests"] == c["resources"]["limits"]
    _, g = deployment_for(docs, "Gateway")
    assert g["resources"]["limits"] == {"cpu": "2"} and "nvidia.com/gpu" not in g["resources"]["limits"]
    assert all("namespace" not in d["metadata"] for d in docs)


def test_existing_etcd_and_nats_are_used_not_deployed(hello, tmp_path):
    out = tmp_path / "m.yaml"
    r = dynamo("deploy", hello, "--etcd", "http://etcd.infra:2379", "--nats", "nats://nats.infra:4222",
               "-o", out)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    assert not [d for d in docs if "etcd" in d["metadata"]["name"] or "nats" in d["metadata"]["name"]]
    _, c = deployment_for(docs, "Backend")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ETCD_ENDPOINTS"] == "http://etcd.infra:2379"
    assert env["NATS_SERVER"] == "nats://nats.infra:4222"
    # Only one of them given: the other is still deployed.
    _, docs = deploy(hello, "--etcd", "http://etcd.infra:2379")
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"}
    assert names == {"frontend-dynamo-nats"}


def test_the_tar_gz_deploys_the_same(hello):
    a, _ = deploy(hello)
    b, _ = deploy(hello + ".tar.gz")
    assert a == b


def test_bad_quantity_is_refused(tmp_path):
    d = build(f"{GRAPHS}/pruned.py:Gateway", tmp_path, "--Worker.ServiceArgs.resources.memory=lots")
    r = dynamo("deploy", d)
    assert r.returncode != 0
    assert "Worker" in r.stderr and "resources.memory" in r.stderr and "quantity" in r.stderr


@pytest.fixture
def kubectl():
    path = shutil.which("kubectl")
    assert path, "kubectl is missing: scripts/deps.sh installs it (Debian's kubernetes-client)"
    return path


def test_kubectl_apply_dry_run_accepts_every_object(kubectl, hello, pruned, tmp_path):
    api = FakeAPIServer()
    try:
        for artifact, ns in ((hello, "default"), (pruned, "demo")):
            f = tmp_path / "m.yaml"
            r = dynamo("deploy", artifact, "--namespace", ns, "-o", f)
            assert r.returncode == 0, r.stderr
            docs = list(yaml.safe_load_all(f.read_text()))
            k = subprocess.run([kubectl, "apply", "--dry-run=client", "--validate=false", "-f", f],
                               capture_output=True, text=True, timeout=60,
                               env=env_for_tests(KUBECONFIG=api.kubeconfig(tmp_path / "kc")))
            assert k.returncode == 0, k.stderr
            created = [x for x in k.stdout.splitlines() if x.endswith("created (dry run)")]
            assert len(created) == len(docs), k.stdout
            for d in docs:  # each object went to its namespaced REST path
                plural = d["kind"].lower() + "s"
                assert any(f"/namespaces/{ns}/{plural}/{d['metadata']['name']}" in q
                           for q in api.httpd.requests), (d["kind"], api.httpd.requests)
        assert api.httpd.writes == 0
    finally:
        api.close()


def test_kubectl_decodes_every_object(kubectl, hello, pruned, tmp_path):
    # `kubectl apply --dry-run=client` needs an API server even so (it asks
    # it for the REST mapping). `kubectl set env --local` needs none and
    # decodes each object into its typed Go struct (replicas an int32,
    # quantities parsed), failing with "unable to decode" on a bad one;
    # ConfigMaps and Services decode too and are then reported as having
    # no pod template, which is expected.
    for artifact in (hello, pruned):
        f = tmp_path / "m.yaml"
        r = dynamo("deploy", artifact, "-o", f)
        assert r.returncode == 0, r.stderr
        k = subprocess.run(["kubectl", "set", "env", "--local", "-f", f, "DYN_CHECK=1", "-o", "name"],
                           capture_output=True, text=True, timeout=60)
        docs = list(yaml.safe_load_all(f.read_text()))
        workloads = {f"{d['kind'].lower()}.apps/{d['metadata']['name']}" for d in docs
                     if d["kind"] in ("Deployment", "StatefulSet")}
        assert set(k.stdout.split()) == workloads, k.stderr
        errors = [x for x in k.stderr.splitlines() if x.strip()]
        assert errors and all("does not have a pod template" in x for x in errors), k.stderr
        assert len(errors) == len(docs) - len(workloads)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f.read_text().replace("cpu: \"500m\"", "cpu: \"500 m\"", 1))
    k = subprocess.run(["kubectl", "set", "env", "--local", "-f", bad, "X=1", "-o", "name"],
                       capture_output=True, text=True, timeout=60)
    assert "quantities must match" in k.stderr  # the check above would catch a bad one


def test_apply_without_kubectl_says_so(hello, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    r = dynamo("deploy", hello, "--apply", env=env_for_tests(PATH=empty))
    assert r.returncode != 0
    assert "needs kubectl" in r.stderr and "none on PATH" in r.stderr


def test_apply_without_a_cluster_says_so(kubectl, hello, tmp_path):
    # An empty kubeconfig: no context, no server.
    cfg = tmp_path / "kubeconfig"
    cfg.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    r = dynamo("deploy", hello, "--apply", env=env_for_tests(KUBECONFIG=cfg))
    assert r.returncode != 0
    assert "no Kubernetes cluster is reachable" in r.stderr and "nothing applied" in r.stderr


def test_pod_variables_cannot_be_set_twice(tmp_path):
    # ETCD_ENDPOINTS, NATS_SERVER and the DYN_* variables dynamo deploy sets
    # in every pod: a service's own envs naming one are refused (a pod with
    # a variable twice is ambiguous); other variables pass through.
    for name in ("NATS_SERVER", "ETCD_ENDPOINTS", "DYN_LISTEN_PORT", "DYN_HEALTH_PORT"):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"Worker:\n  ServiceArgs:\n    envs:\n      - {{name: {name}, value: x}}\n"
                       "      - {name: MINE, value: y}\n")
        d = build(f"{GRAPHS}/pruned.py:Gateway", tmp_path / "o", "-f", cfg)
        r = dynamo("deploy", d)
        assert r.returncode != 0
        assert "Worker" in r.stderr and name in r.stderr and "every pod" in r.stderr, r.stderr
    cfg.write_text("Worker:\n  ServiceArgs:\n    envs:\n      - {name: MINE, value: y}\n"
                   "      - {name: DYN_LOG, value: debug}\n")
    _, docs = deploy(build(f"{GRAPHS}/pruned.py:Gateway", tmp_path / "o", "-f", cfg))
    _, c = deployment_for(docs, "Worker")
    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names)) and {"MINE", "DYN_LOG"} <= set(names)


def test_http_listens_on_every_address_in_the_pod(tmp_path):
    # A config with host 127.0.0.1 (fine on a laptop) would hide the
    # service from its Kubernetes Service: the pod's command overrides it.
    # Running that command (paths mapped to here) shows what it serves on.
    cfg = tmp_path / "c.yaml"
    cfg.write_text((HELLO / "config.yaml").read_text() + "  host: 127.0.0.1\n")
    d = build(f"{HELLO}/hello_world.py:Frontend", tmp_path / "o", "-f", cfg)
    _, docs = deploy(d)
    cm = next(x for x in docs if x["kind"] == "ConfigMap")["data"]["config.yaml"]
    assert "127.0.0.1" in cm
    (tmp_path / "cm.yaml").write_text(cm)
    for svc, http in (("Frontend", True), ("Backend", False)):
        _, c = deployment_for(docs, svc)
        assert (f"--{svc}.host=0.0.0.0" in c["command"]) == http
        assert c["command"][:2] == ["dynamo", "serve"]
        args = [d if a == "/app" else tmp_path / "cm.yaml" if a == "/etc/dynamo/config.yaml" else a
                for a in c["command"][2:]]
        r = dynamo("serve", *args, "--dry-run")
        assert r.returncode == 0, r.stderr
        if http:
            assert "HTTP 0.0.0.0:8000" in r.stdout, r.stdout


def test_pod_names_its_service_for_dynamo_status(hello, serve, tmp_path):
    # The pod sets no DYN_SERVICE_NAME or DYN_SERVICE_NAMESPACE itself:
    # `dynamo serve` in the pod gives them to its worker, as on a laptop,
    # so `dynamo status` names every service, one that serves no endpoint
    # (hello's Frontend) too. Running the Frontend pod's command (paths
    # mapped to here, an embedded control plane instead of etcd and NATS)
    # shows what a cluster's `dynamo status` would list.
    _, docs = deploy(hello)
    _, c = deployment_for(docs, "Frontend")
    assert not {"DYN_SERVICE_NAME", "DYN_SERVICE_NAMESPACE"} & {e["name"] for e in c["env"]}
    cm = next(x for x in docs if x["kind"] == "ConfigMap")["data"]["config.yaml"]
    (tmp_path / "cm.yaml").write_text(cm)
    args = [hello if a == "/app" else tmp_path / "cm.yaml" if a == "/etc/dynamo/config.yaml" else a
            for a in c["command"][2:]]
    sock = tmp_path / "cp.sock"
    s = serve(*args, f"--Frontend.port={free_port()}", "--control-socket", sock)
    s.wait_for("Frontend ready")
    deadline, out = time.time() + 30, ""
    while time.time() < deadline:
        r = dynamo("status", "--control-socket", sock, timeout=30)
        out = r.stdout
        if r.returncode == 0 and "hello/Frontend" in out:
            break
        time.sleep(0.2)
    row = [line.split() for line in out.splitlines() if line.startswith("hello/Frontend ")]
    assert len(row) == 1, out
    assert row[0][3] == "-", out  # no endpoint: named only by its environment
    assert s.stop() == 0, s.output()


def test_grafana_dashboard_charts_metrics_dynamo_exports():
    """deploy/grafana/dynamo.json is a Grafana dashboard whose every query
    names metrics that dynamo's services register (their names appear as
    string literals in src/), so the dashboard cannot drift from /metrics."""
    import json
    import pathlib
    import re as _re
    root = pathlib.Path(__file__).resolve().parents[2]
    dash = json.loads((root / "deploy/grafana/dynamo.json").read_text())
    assert dash["title"] and dash["panels"]
    sources = "".join(p.read_text() for p in (root / "src").rglob("*.c"))
    names = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            for m in _re.findall(r"\bdynamo_[a-z_]+", t["expr"]):
                names.add(_re.sub(r"_(bucket|count|sum)$", "", m))
    assert len(names) >= 12
    missing = sorted(n for n in names if f'"{n}"' not in sources)
    assert not missing, f"the dashboard charts metrics nothing registers: {missing}"


def test_disaggregated_graph_deploys_prefill_and_decode_apart(tmp_path):
    """disagg.py: the decode Worker and the PrefillWorker are Deployments of
    their own, each pod serving its one service with the graph's config."""
    root = GRAPHS.parents[2]
    art = build(f"{root}/examples/llm/graphs/disagg.py:Frontend", tmp_path, "-f",
                root / "examples/llm/configs/disagg.yaml")
    _, docs = deploy(art)
    check_well_formed(docs)
    check_workloads(docs)
    check_services_select_pods(docs)
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert cfg["Worker"]["role"] == "decode"
    assert "role" not in cfg["PrefillWorker"]  # the service is its role
    for name in ("Worker", "PrefillWorker"):
        d, c = deployment_for(docs, name)
        assert d["spec"]["replicas"] == cfg[name]["ServiceArgs"]["workers"]
        cmd = c["command"]
        assert cmd[cmd.index("--service-name") + 1] == name
    workers = {deployment_for(docs, n)[0]["metadata"]["name"] for n in ("Worker", "PrefillWorker")}
    assert len(workers) == 2
