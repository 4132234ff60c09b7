"""Aggregated serving with KV-aware routing:
Frontend -> Processor -> Router -> Worker.

    dynamo serve examples/llm/graphs/agg_router.py:Frontend -f examples/llm/configs/agg_router.yaml

The Processor asks the Router which worker already holds the longest prefix
of the prompt's KV cache, then calls that worker directly.
"""

from dynamo.llm import Frontend, Processor, Router, Worker

Frontend.link(Processor).link(Router).link(Worker)
Processor.link(Worker)
