"""Service configuration: the merged YAML + CLI config every worker gets.

``dynamo serve`` merges ``-f config.yaml`` and ``--Service.key=value``
(CLI wins) and hands the result to each worker as JSON in
``DYNAMO_SERVICE_CONFIG``. A service sees its own section plus the
``Common`` keys it lists in ``common-configs``. ``ServiceArgs`` (workers,
resources, envs) override the decorator.

``ServiceConfig`` behaves as NVIDIA Dynamo's: a dict of sections keyed by
service name, one per process (``get_instance()``; setting
``ServiceConfig._instance = None`` makes the next call read the
environment again), with ``require``, ``as_args`` and
``get_parsed_config``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

RESERVED = ("ServiceArgs", "common-configs")
SERVICE_ARGS = ("workers", "resources", "envs")


class ConfigError(ValueError):
    """A configuration problem; the message names the file, service and key."""


class ServiceConfig(dict):
    _instance: Optional["ServiceConfig"] = None

    @classmethod
    def get_instance(cls) -> "ServiceConfig":
        if cls._instance is None:
            raw = os.environ.get("DYNAMO_SERVICE_CONFIG", "")
            cls._instance = cls(resolve_common(json.loads(raw)) if raw else {})
        return cls._instance

    @classmethod
    def _reset(cls, value: Optional[Dict[str, Any]] = None) -> None:
        cls._instance = None if value is None else cls(resolve_common(value))

    def require(self, service_name: str, key: str) -> Any:
        section = self.get(service_name, {})
        if key not in section:
            raise ConfigError(f"{source()}: service {service_name} needs key '{key}'")
        return section[key]

    def service_section(self, service_name: str) -> Dict[str, Any]:
        """The service's keys with the Common keys it subscribes to (and does
        not set itself) first, without ServiceArgs and common-configs. Works
        on a config as loaded here (Common already merged) and on a raw one
        someone built by hand."""
        section = self.get(service_name)
        if not isinstance(section, dict):
            return {}
        common = self.get("Common") or {}
        out = {k: common[k] for k in section.get("common-configs") or []
               if k in common and k not in section}
        out.update((k, v) for k, v in section.items() if k not in RESERVED)
        return out

    @classmethod
    def get_parsed_config(cls, service_name: str) -> Dict[str, Any]:
        """The service's effective configuration as a dict (see
        service_section), from the process's instance."""
        return cls.get_instance().service_section(service_name)

    def as_args(self, service_name: str, prefix: str = "") -> List[str]:
        """The service's keys (those starting with prefix, which is stripped)
        as command-line arguments: ``--key value``; a true boolean is a bare
        ``--key``, a false one is left out; a dict or list is JSON. Common
        keys the service subscribes to come first, ServiceArgs never."""
        args: List[str] = []
        for key, value in self.service_section(service_name).items():
            if prefix and not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if isinstance(value, bool):
                if value:
                    args.append(f"--{name}")
            elif isinstance(value, (dict, list)):
                args.extend([f"--{name}", json.dumps(value)])
            else:
                args.extend([f"--{name}", str(value)])
        return args


def source() -> str:
    """Where the configuration came from, for messages: the file, if any."""
    return os.environ.get("DYN_CONFIG_FILE") or "configuration"


def resolve_common(config: Dict[str, Any]) -> Dict[str, Any]:
    """Copies each service's opted-in Common keys into its section (the
    section's own value wins)."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source()}: the top level must be a mapping of services")
    common = config.get("Common", {}) or {}
    out: Dict[str, Any] = {}
    for name, section in config.items():
        if name == "Common":
            out[name] = common
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{source()}: service {name}: its section must be a mapping")
        wanted = section.get("common-configs", []) or []
        if not isinstance(wanted, list):
            raise ConfigError(f"{source()}: service {name}, key 'common-configs': must be a list")
        # Subscribed keys the section does not set come first; the section's
        # own keys keep their order (as_args lists them in this order).
        merged = {k: common[k] for k in wanted if k in common and k not in section}
        missing = [k for k in wanted if k not in common]
        if missing:
            raise ConfigError(f"{source()}: service {name}, key 'common-configs': "
                              f"{', '.join(missing)} not in the Common section")
        merged.update(section)
        out[name] = merged
    return out


def service_args(config: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The validated ServiceArgs of one service (may be empty)."""
    args = config.get(name, {}).get("ServiceArgs", {}) or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{source()}: service {name}, key 'ServiceArgs': must be a mapping")
    for key in args:
        if key not in SERVICE_ARGS:
            raise ConfigError(f"{source()}: service {name}, key 'ServiceArgs.{key}': unknown "
                              f"(known: {', '.join(SERVICE_ARGS)})")
    w = args.get("workers")
    if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
        raise ConfigError(f"{source()}: service {name}, key 'ServiceArgs.workers': "
                          f"must be an integer >= 1, not {_shown(w)}")
    r = args.get("resources")
    if r is not None and not isinstance(r, dict):
        raise ConfigError(f"{source()}: service {name}, key 'ServiceArgs.resources': must be a mapping")
    e = args.get("envs")
    if e is not None and not (isinstance(e, list) and all(
            isinstance(x, dict) and "name" in x and "value" in x for x in e)):
        raise ConfigError(f"{source()}: service {name}, key 'ServiceArgs.envs': "
                          "must be a list of {name: ..., value: ...}")
    return args


def _shown(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:60] + "..."


def http_address(config: Dict[str, Any], name: str, default_port: int) -> Tuple[str, int]:
    """The validated (host, port) an HTTP service listens on: its section's
    ``host`` and ``port`` keys (the same checks as src/config/check.c)."""
    section = config.get(name, {}) or {}
    port = section.get("port", default_port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{source()}: service {name}, key 'port': must be a port number "
                          f"(0-65535), not {_shown(port)}")
    host = section.get("host", "0.0.0.0")
    if not isinstance(host, str):
        raise ConfigError(f"{source()}: service {name}, key 'host': must be a host name or "
                          f"address (a string), not {_shown(host)}")
    return host, port


def init_kwargs(config: Dict[str, Any], name: str, params: List[str]) -> Dict[str, Any]:
    """Config keys of the service that name __init__ parameters."""
    section = config.get(name, {})
    return {k: v for k, v in section.items() if k in params and k not in RESERVED}
