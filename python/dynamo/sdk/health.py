"""A worker's health endpoints, for Kubernetes probes and for operators.

When ``DYN_HEALTH_PORT`` is set (``dynamo deploy`` sets it in every pod,
``dynamo serve --health-port BASE`` gives each local worker its own), the
worker serves on that port, on the C HTTP server in its own loop:

- ``GET /live``: 200 as long as the worker's loop runs (a wedged loop cannot
  answer, which is what a liveness probe is for);
- ``GET /health``: 200 ``{"status":"ready"}`` once the worker's endpoints are
  registered with discovery and its ``@async_on_start`` hooks have finished;
  503 before that (``starting``) and once it begins draining (``draining``),
  so a readiness probe takes it out of rotation at the right moments; and
  503 ``unregistered`` while a ready worker's registration is gone from
  discovery (control plane lost, etcd lease expired), 200 again once the
  runtime has put it back;
- ``GET /metrics``: the process's Prometheus metrics (``dynamo.sdk.metrics``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from dynamo import _core


class Health:
    def __init__(self, rt: Any, port: int, host: str = "0.0.0.0"):
        self._rt = rt
        self.state = "starting"
        self._server = rt._core.http_server(host, port)
        self.port = self._server.port
        self._server.route("GET", "/live", self._live)
        self._server.route("GET", "/health", self._health)
        self._server.route("GET", "/metrics", self._metrics)
        rt.kick()  # libuv adds the listener to its epoll set on its next pass

    def _answer(self, req: Any, status: int, body: dict) -> None:
        req.respond(status, "application/json", json.dumps(body).encode())
        self._rt.kick()

    def _live(self, req: Any) -> None:
        self._answer(req, 200, {"status": "live"})

    def _health(self, req: Any) -> None:
        state = self.state
        if state == "ready" and not self._rt._core.registered:
            state = "unregistered"
        self._answer(req, 200 if state == "ready" else 503, {"status": state})

    def _metrics(self, req: Any) -> None:
        req.respond(200, "text/plain; version=0.0.4; charset=utf-8", _core.metrics_render())
        self._rt.kick()

    def stop(self) -> None:
        self._server.stop()
        self._rt.kick()


def start_health(rt: Any) -> Optional[Health]:
    """A Health server on $DYN_HEALTH_PORT, or None when it is unset or empty."""
    port = os.environ.get("DYN_HEALTH_PORT", "").strip()
    if not port or port == "0":
        return None
    return Health(rt, int(port), os.environ.get("DYN_HEALTH_HOST", "0.0.0.0"))
