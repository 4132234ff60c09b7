"""The LLM stack's C services, as nodes for Python graphs.

    from dynamo.llm import Frontend, Processor, Router, Worker
    Frontend.link(Processor).link(Router).link(Worker)   # agg_router
    Frontend.link(Processor).link(Worker)                # agg
    Frontend.link(Processor).link(Worker); Processor.link(PrefillWorker)  # disagg

Each is a ``c_service`` from ``libdynamo_llm.so`` (src/llm): the OpenAI
frontend, the processor (tokenizer, chat template, detokenizer), the KV
router, the engine worker and the prefill worker of disaggregated serving
(a Worker with `role: decode` calls it). Their depends() edges are the
maximal graph; ``link()`` picks the path. Configure them with YAML as any
service (see examples/llm/configs). ``DYN_LLM_LIB`` overrides where the
shared object is looked for.
"""

from __future__ import annotations

import os

from dynamo.sdk.service import CService, c_service


def library_path() -> str:
    """Where libdynamo_llm.so is: $DYN_LLM_LIB, else where the build or
    `make install` put it (recorded in dynamo._paths at build time)."""
    env = os.environ.get("DYN_LLM_LIB")
    if env:
        return env
    try:
        from dynamo._paths import LLM_LIB  # written by CMake
    except ImportError:  # a source checkout that was never built
        LLM_LIB = "libdynamo_llm.so"
    return LLM_LIB


_LIB = library_path()

Worker: CService = c_service(_LIB, "Worker", endpoints={"generate": True})
# The prefill workers of disaggregated serving. A decode Worker (`role:
# decode`) calls them; the edge that brings them into a graph is the
# Processor's, because a graph's plain Worker links nothing, and an edge of
# its own would start prefill workers in every aggregated graph.
PrefillWorker: CService = c_service(_LIB, "PrefillWorker", endpoints={"prefill": True})
Router: CService = c_service(_LIB, "Router", endpoints={"generate": False}, depends=[Worker])
Processor: CService = c_service(_LIB, "Processor", endpoints={"generate": True},
                                depends=[Router, Worker, PrefillWorker])
Frontend: CService = c_service(_LIB, "Frontend", endpoints={}, depends=[Processor],
                               http_port=8000)

__all__ = ["Frontend", "Processor", "Router", "Worker", "PrefillWorker", "library_path"]
