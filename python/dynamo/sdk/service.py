"""``@service``: a class becomes a node of an inference graph.

The decorator returns a ``DynamoService`` that wraps the class (calling it
still constructs the class) and records what the graph needs: namespace,
resources, workers, endpoints, HTTP routes, ``depends()`` edges and the
``link()`` selection.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Optional

from dynamo.sdk.decorators import EndpointSpec
from dynamo.sdk.dependency import Dependency

DEFAULT_NAMESPACE = "dynamo"

# The base image `dynamo build` names in an artifact's Dockerfile unless
# told otherwise: $DYNAMO_IMAGE, else the image `make docker` tags. Code
# written for NVIDIA Dynamo passes it as @service(image=DYNAMO_IMAGE).
DYNAMO_IMAGE = os.environ.get("DYNAMO_IMAGE") or "dynamo:latest"

# @service options this SDK reads; any other is warned about and ignored.
OPTIONS = ("dynamo", "resources", "workers", "http_port", "traffic", "image", "envs")


class DynamoService:
    def __init__(self, cls: type, dynamo: Optional[Dict[str, Any]] = None,
                 resources: Optional[Dict[str, Any]] = None, workers: int = 1,
                 http_port: Optional[int] = None, traffic: Optional[Dict[str, Any]] = None,
                 image: Optional[str] = None, envs: Optional[List[Dict[str, Any]]] = None):
        if not isinstance(cls, type):
            raise TypeError(f"@service decorates a class, not {cls!r}")
        dyn = dict(dynamo or {})
        self.inner = cls
        self.name = cls.__name__
        self.enabled = bool(dyn.get("enabled", True))
        self.namespace = str(dyn.get("namespace", DEFAULT_NAMESPACE))
        self.resources = dict(resources or {})
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"@service {self.name}: workers must be an integer >= 1, not {workers!r}")
        self.workers = workers
        self.http_port = http_port
        self.timeout = _timeout(cls.__name__, traffic)
        if image is not None and (not isinstance(image, str) or not image):
            raise ValueError(f"@service {self.name}: image must be an image name, not {image!r}")
        self.image = image
        if envs is not None and not (isinstance(envs, list) and all(
                isinstance(e, dict) and "name" in e and "value" in e for e in envs)):
            raise ValueError(f"@service {self.name}: envs must be a list of "
                             "{'name': ..., 'value': ...}")
        self.envs = list(envs or [])
        self.endpoints: Dict[str, EndpointSpec] = {}
        self.apis: Dict[str, EndpointSpec] = {}
        self.dependencies: Dict[str, Dependency] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Dependency):
                    self.dependencies[attr] = value
                spec = getattr(value, "__dynamo_endpoint__", None)
                if spec is not None:
                    self.endpoints[spec.name] = spec
                spec = getattr(value, "__dynamo_api__", None)
                if spec is not None:
                    self.apis[spec.name] = spec
        self.on_start = [v for k, v in _members(cls) if getattr(v, "__dynamo_on_start__", False)]
        self.on_shutdown = [v for k, v in _members(cls) if getattr(v, "__dynamo_on_shutdown__", False)]
        self.links: List["DynamoService"] = []

    # The class stays usable as a class.
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def link(self, other: "DynamoService") -> "DynamoService":
        """Make the depends() edge to ``other`` live; once a service links
        anything, its unlinked edges are pruned. Returns ``other`` so links
        chain: ``Frontend.link(Middle).link(Backend)``."""
        if not isinstance(other, DynamoService):
            raise TypeError(f"{self.name}.link() takes a @service class, not {other!r}")
        if not any(d.on is other for d in self.dependencies.values()):
            raise ValueError(f"{self.name}.link({other.name}): {self.name} has no depends({other.name})")
        if other not in self.links:
            self.links.append(other)
        return other

    def live_dependencies(self) -> Dict[str, Dependency]:
        """The depends() edges that survive link() pruning."""
        if not self.links:
            return dict(self.dependencies)
        return {a: d for a, d in self.dependencies.items() if d.on in self.links}

    def __repr__(self) -> str:
        return f"<dynamo service {self.namespace}/{self.name}>"


def _members(cls: type) -> List[Any]:
    seen: Dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        seen.update(vars(klass))
    return list(seen.items())


def _timeout(name: str, traffic: Optional[Dict[str, Any]]) -> Optional[float]:
    """traffic={"timeout": seconds}: how long a request to the service may
    take; None when not given."""
    if traffic is None:
        return None
    if not isinstance(traffic, dict):
        raise ValueError(f"@service {name}: traffic must be a mapping, not {traffic!r}")
    t = traffic.get("timeout")
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
        raise ValueError(f"@service {name}: traffic.timeout must be a number of seconds > 0, "
                         f"not {t!r}")
    return float(t)


def service(inner: Optional[type] = None, *, dynamo: Optional[Dict[str, Any]] = None,
            resources: Optional[Dict[str, Any]] = None, workers: int = 1,
            http_port: Optional[int] = None, traffic: Optional[Dict[str, Any]] = None,
            image: Optional[str] = None, envs: Optional[List[Dict[str, Any]]] = None,
            **unknown: Any) -> Any:
    """``@service`` or ``@service(dynamo={...}, resources={...}, workers=N)``.

    ``traffic={"timeout": s}`` bounds each request to the service (calls
    through depends() and its @api requests); ``image`` is the base image of
    the artifact `dynamo build` makes when this is the graph's entry;
    ``envs`` are environment variables of its workers (ServiceArgs.envs in
    the config replace them). Other options of NVIDIA Dynamo or BentoML
    (``resource=``, ``kubernetes_overwrites=`` ...) are a warning naming the
    option, so such code still loads."""
    def wrap(cls: type) -> DynamoService:
        for key in unknown:
            warnings.warn(f"@service {getattr(cls, '__name__', cls)}: option '{key}' is not "
                          f"supported and is ignored (supported: {', '.join(OPTIONS)})",
                          UserWarning, stacklevel=2)
        return DynamoService(cls, dynamo, resources, workers, http_port, traffic, image, envs)
    return wrap(inner) if inner is not None else wrap


class _CEndpoint:
    """What the SDK needs to know of a C service's endpoint."""

    def __init__(self, name: str, streaming: bool):
        self.name, self.streaming = name, streaming


class CService(DynamoService):
    """A service written in C (see dynamo/service.h), as a node of a Python
    graph: ``depends(c_service("lib.so", "Backend"))`` starts its workers
    with ``dynamo worker`` and calls it like any other service.

    ``depends`` lists the services the C service calls (the names in its C
    ``depends`` table), so the graph follows them and ``link()`` prunes them
    as for a Python service; the worker is told which edges survived."""

    def __init__(self, so_path: str, name: str, namespace: str = DEFAULT_NAMESPACE,
                 endpoints: Optional[Dict[str, bool]] = None, workers: int = 1,
                 resources: Optional[Dict[str, Any]] = None,
                 depends: Optional[List[DynamoService]] = None,
                 http_port: Optional[int] = None):
        self.inner = None  # type: ignore[assignment]
        self.name = name
        self.enabled = True
        self.namespace = namespace
        self.resources = dict(resources or {})
        self.workers = workers
        self.http_port = http_port
        self.timeout, self.image, self.envs = None, None, []
        self.so_path = so_path
        self.endpoints = {n: _CEndpoint(n, s) for n, s in (endpoints or {"generate": True}).items()}  # type: ignore[misc]
        self.apis = {}
        self.dependencies = {d.name: Dependency(d) for d in (depends or [])}
        self.on_start, self.on_shutdown, self.links = [], [], []

    @property
    def target(self) -> str:
        import os
        return f"{os.path.abspath(self.so_path)}:{self.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.name} is a C service; it runs in its own worker")

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<dynamo C service {self.namespace}/{self.name} from {self.so_path}>"


def c_service(so_path: str, name: str, namespace: str = DEFAULT_NAMESPACE,
              endpoints: Optional[Dict[str, bool]] = None, workers: int = 1,
              resources: Optional[Dict[str, Any]] = None,
              depends: Optional[List[DynamoService]] = None,
              http_port: Optional[int] = None) -> CService:
    """A C service from a shared object, for ``depends()`` or as a graph's
    entry. ``endpoints`` maps each endpoint name to whether it streams
    (default: one streaming ``generate``); ``depends`` lists the services it
    calls; ``http_port`` is the port it serves HTTP on, if it does."""
    return CService(so_path, name, namespace, endpoints, workers, resources, depends, http_port)
