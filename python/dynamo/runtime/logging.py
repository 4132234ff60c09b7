"""``configure_dynamo_logging``: one place that sets up Python logging for
a dynamo process, under the name NVIDIA Dynamo's code imports it by.

The root logger writes to stderr (which `dynamo serve` captures and prefixes
per worker), at the level $DYN_LOG names (error, warn, info, debug, trace;
info when unset or unknown), each line tagged with the service name and
worker id when given.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,  # Python has nothing finer
}


def log_level(value: Optional[str] = None) -> int:
    """The logging level $DYN_LOG (or value) names; its first comma-separated
    part counts (``debug,module=trace`` is debug)."""
    raw = os.environ.get("DYN_LOG", "info") if value is None else value
    return _LEVELS.get(raw.split(",")[0].strip().lower(), logging.INFO)


def configure_dynamo_logging(service_name: Optional[str] = None,
                             worker_id: Optional[int] = None) -> None:
    """Replaces the root logger's handlers with one stderr handler; safe to
    call again (it does not stack handlers)."""
    tag = service_name or ""
    if worker_id is not None:
        tag += f":{worker_id}"
    prefix = f"[{tag}] " if tag else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(log_level())


__all__ = ["configure_dynamo_logging", "log_level"]
