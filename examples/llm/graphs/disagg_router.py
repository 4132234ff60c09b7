"""Disaggregated serving with KV-aware routing to the decode workers:
Frontend -> Processor -> Router -> Worker (decode), which calls
PrefillWorker.

    dynamo serve examples/llm/graphs/disagg_router.py:Frontend -f examples/llm/configs/disagg_router.yaml

The Router picks the decode worker holding the longest prefix of the
prompt; that worker asks a PrefillWorker for only the blocks it lacks.
The Processor's edge to PrefillWorker puts the prefill workers in the
graph (python/dynamo/llm.py says why).
"""

from dynamo.llm import Frontend, PrefillWorker, Processor, Router, Worker

Frontend.link(Processor).link(Router).link(Worker)
Processor.link(Worker)
Processor.link(PrefillWorker)
