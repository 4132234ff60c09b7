"""``python -m dynamo.sdk.plan TARGET``: the graph as JSON for ``dynamo serve``.

Reads the merged config from DYNAMO_SERVICE_CONFIG, checks it against the
graph (unknown services and bad ServiceArgs are errors naming the file,
service and key), and prints one JSON document: services with their
effective workers, resources, envs, endpoints and HTTP routes, and edges.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict

from dynamo.sdk.config import ConfigError, http_address, resolve_common, service_args, source
from dynamo.sdk.graph import TargetError, load_target, resolve
from dynamo.sdk.service import CService, DynamoService

DEFAULT_HTTP_PORT = 8000


def service_plan(svc: DynamoService, config: Dict[str, Any]) -> Dict[str, Any]:
    args = service_args(config, svc.name)
    resources = dict(svc.resources)
    resources.update(args.get("resources", {}))
    gpu = resources.get("gpu", 0)
    try:
        resources["gpu"] = int(gpu)
        if resources["gpu"] < 0:
            raise ValueError(gpu)
    except (TypeError, ValueError):
        raise ConfigError(f"{source()}: service {svc.name}, key 'ServiceArgs.resources.gpu': "
                          f"must be a whole number of GPUs, not {gpu!r}") from None
    http = None
    # A C service has no @api routes to list; its http_port says it serves HTTP.
    if svc.apis or (isinstance(svc, CService) and svc.http_port):
        host, port = http_address(config, svc.name, svc.http_port or DEFAULT_HTTP_PORT)
        http = {"host": host, "port": port,
                "routes": [{"method": a.method, "path": a.path} for a in svc.apis.values()]}
    extra: Dict[str, Any] = {"kind": "c", "target": svc.target} if isinstance(svc, CService) else {}
    if svc.image:
        extra["image"] = svc.image  # the artifact's base image (src/package/artifact.c)
    return {
        **extra,
        "name": svc.name,
        "namespace": svc.namespace,
        "workers": args.get("workers", svc.workers),
        "resources": resources,
        "envs": args.get("envs", svc.envs),
        "endpoints": sorted(svc.endpoints),
        "http": http,
        "dependencies": [d.on.name for d in svc.live_dependencies().values()],
    }


def build_plan(target: str, raw_config: Dict[str, Any]) -> Dict[str, Any]:
    entry = load_target(target)
    config = resolve_common(raw_config)
    services, edges = resolve(entry)
    names = {s.name for s in services}
    for key in config:
        if key != "Common" and key not in names:
            raise ConfigError(f"{source()}: service '{key}' is not in the graph of {entry.name} "
                              f"(services: {', '.join(sorted(names))})")
    return {
        "target": target,
        "entry": entry.name,
        "kind": "python",
        "services": [service_plan(s, config) for s in services],
        "edges": [list(e) for e in edges],
        "config": raw_config,
    }


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m dynamo.sdk.plan TARGET", file=sys.stderr)
        return 2
    raw = os.environ.get("DYNAMO_SERVICE_CONFIG", "") or "{}"
    try:
        plan = build_plan(sys.argv[1], json.loads(raw))
    except (ConfigError, TargetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    json.dump(plan, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
