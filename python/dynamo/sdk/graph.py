"""Loading a target and resolving its graph.

A target is ``path/to/file.py:Service`` or ``package.module:Service``. The
graph is every service reachable from the entry through the depends() edges
that survive link() pruning, in dependency order (dependencies first).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Dict, List, Tuple

from dynamo.sdk.service import DynamoService


class TargetError(ValueError):
    pass


def load_target(target: str) -> DynamoService:
    if ":" not in target:
        raise TargetError(f"target '{target}' must be 'file.py:Service' or 'package.module:Service'")
    where, _, name = target.rpartition(":")
    if where.endswith(".py") or os.sep in where:
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise TargetError(f"target '{target}': no such file {where}")
        # Imports beside the graph file (import ServiceB) must work, as they
        # do when running the file directly.
        sys.path.insert(0, os.path.dirname(path))
        modname = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise TargetError(f"target '{target}': cannot load {where}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise TargetError(f"target '{target}': {e}") from None
    svc = getattr(module, name, None)
    if svc is None:
        raise TargetError(f"target '{target}': {where} has no '{name}'")
    if not isinstance(svc, DynamoService):
        raise TargetError(f"target '{target}': {name} is not a @service class")
    return svc


def resolve(entry: DynamoService) -> Tuple[List[DynamoService], List[Tuple[str, str]]]:
    """Services in dependency order and the live edges (caller, callee)."""
    order: List[DynamoService] = []
    edges: List[Tuple[str, str]] = []
    state: Dict[int, int] = {}  # 1: visiting, 2: done

    def visit(svc: DynamoService, path: List[str]) -> None:
        if state.get(id(svc)) == 2:
            return
        if state.get(id(svc)) == 1:
            raise TargetError("dependency cycle: " + " -> ".join(path + [svc.name]))
        state[id(svc)] = 1
        for dep in svc.live_dependencies().values():
            edge = (svc.name, dep.on.name)
            if edge not in edges:
                edges.append(edge)
            visit(dep.on, path + [svc.name])
        state[id(svc)] = 2
        order.append(svc)

    visit(entry, [])
    names: Dict[str, DynamoService] = {}
    for s in order:
        if s.name in names and names[s.name] is not s:
            raise TargetError(f"two services are named {s.name}")
        names[s.name] = s
    return order, edges


def find(services: List[DynamoService], name: str) -> DynamoService:
    for s in services:
        if s.name == name:
            return s
    raise TargetError(f"service '{name}' is not in the graph "
                      f"(services: {', '.join(s.name for s in services)})")
