"""``python -m dynamo.sdk.worker TARGET --service NAME``: one worker process.

Started by ``dynamo serve`` (one per worker of each service). It builds the
service's instance with its config, wires a client for each live
``depends()`` edge, runs the ``@async_on_start`` hooks in order, serves every
endpoint (and HTTP routes for ``@api``), then waits for SIGTERM/SIGINT:
stop accepting, drain in-flight requests, run the ``@on_shutdown`` and
``@async_on_shutdown`` hooks, exit.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import sys
from typing import Any, Dict, List

from dynamo import _core
from dynamo.runtime import DistributedRuntime
from dynamo.sdk.client import ServiceClient
from dynamo.sdk.codec import decode, encode
from dynamo.sdk.config import ConfigError, ServiceConfig, http_address, init_kwargs
from dynamo.sdk.context import dynamo_context
from dynamo.sdk.decorators import EndpointSpec, run_hook
from dynamo.sdk.graph import TargetError, find, load_target, resolve
from dynamo.sdk.health import start_health
from dynamo.sdk.service import DynamoService

GRACE_S = float(os.environ.get("DYN_GRACE_SECONDS", "10"))


def _guard_parent() -> None:
    """Exit when the supervisor dies, even if it is SIGKILLed."""
    sup = os.environ.get("DYN_SUPERVISOR_PID")
    if not sup:
        return
    _core.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != int(sup):  # it died before prctl took effect
        sys.exit(1)


def _make_handler(obj: Any, spec: EndpointSpec) -> Any:
    method = getattr(obj, spec.func.__name__)
    typ = spec.request_type

    if spec.streaming:
        async def stream(body: bytes) -> Any:
            async for item in method(decode(body, typ)):
                yield encode(item)
        return stream

    async def unary(body: bytes) -> bytes:
        return encode(await method(decode(body, typ)))
    return unary


def _instantiate(svc: DynamoService, rt: DistributedRuntime, config: Dict[str, Any]) -> Any:
    obj = svc.inner.__new__(svc.inner)
    # Clients go into the instance dict before __init__ so that __init__
    # may already use them; depends() is a non-data descriptor, so the
    # instance attribute wins.
    for attr, dep in svc.live_dependencies().items():
        obj.__dict__[attr] = ServiceClient(rt, dep.on)
    params = list(inspect.signature(svc.inner.__init__).parameters)[1:]
    obj.__init__(**init_kwargs(config, svc.name, params))
    return obj


async def run(svc: DynamoService) -> int:
    loop = asyncio.get_running_loop()
    config = ServiceConfig.get_instance()
    rt = await DistributedRuntime.connect()
    index = int(os.environ.get("DYN_WORKER_INDEX", "0"))
    dynamo_context.update(runtime=rt, service=svc.name, namespace=svc.namespace,
                          worker_index=index, instance_id=rt.instance_id,
                          endpoints=sorted(svc.endpoints))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    health = start_health(rt)  # /health: 503 until registered and started
    obj = _instantiate(svc, rt, config)
    for hook in svc.on_start:
        await run_hook(getattr(obj, hook.__name__))

    component = rt.namespace(svc.namespace).component(svc.name)
    for name, spec in svc.endpoints.items():
        await component.endpoint(name).serve_endpoint(_make_handler(obj, spec), raw=True)
    http = None
    if svc.apis:
        from dynamo.sdk.http import serve_apis
        http = await serve_apis(rt, svc, obj, config)
    where = [f"at {rt.address}"] if svc.endpoints else []
    if http:
        where.append(f"HTTP on port {http.port}")
    if health:
        health.state = "ready"
        where.append(f"health on port {health.port}")
    print(f"{svc.name} ready: instance {rt.instance_id:x} " + ", ".join(where), flush=True)

    await stop.wait()
    if health:
        health.state = "draining"
    # Stop accepting, drain (endpoint requests and @api requests alike,
    # within one grace period), then the user's shutdown hooks, then exit.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE_S * 0.5
    rt._core.drain()
    rt.kick()
    if http is not None:
        await http.drain(deadline)
    cancelled = await rt.shutdown(max(0, int((deadline - loop.time()) * 1000)))
    if cancelled:
        print(f"{svc.name}: {cancelled} request(s) cancelled at shutdown", file=sys.stderr, flush=True)
    for hook in svc.on_shutdown:
        try:
            await run_hook(getattr(obj, hook.__name__))
        except Exception as e:
            print(f"{svc.name}: shutdown hook {hook.__name__} failed: {e!r}", file=sys.stderr, flush=True)
    if health:
        health.stop()
    return 0


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m dynamo.sdk.worker")
    p.add_argument("target")
    p.add_argument("--service", required=True)
    a = p.parse_args(argv)
    _guard_parent()
    try:
        entry = load_target(a.target)
        services, _ = resolve(entry)
        svc = find(services, a.service)
        config = ServiceConfig.get_instance()
        if svc.apis:  # a bad port is an error before anything starts
            from dynamo.sdk.http import DEFAULT_PORT
            http_address(config, svc.name, svc.http_port or DEFAULT_PORT)
        return asyncio.run(run(svc))
    except (TargetError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
