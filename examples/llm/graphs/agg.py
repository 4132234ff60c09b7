"""Aggregated serving: Frontend -> Processor -> Worker.

    dynamo serve examples/llm/graphs/agg.py:Frontend -f examples/llm/configs/agg.yaml

The Processor spreads requests over the workers (round-robin or random, its
`router` setting) without looking at their KV caches.
"""

from dynamo.llm import Frontend, Processor, Worker

Frontend.link(Processor).link(Worker)
