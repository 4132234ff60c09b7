"""Disaggregated serving: Frontend -> Processor -> Worker (decode), which
calls PrefillWorker.

    dynamo serve examples/llm/graphs/disagg.py:Frontend -f examples/llm/configs/disagg.yaml

The decode Worker (`role: decode`) receives each request; a prompt whose
uncached part is longer than its max-local-prefill-length goes to a
PrefillWorker, which computes it, returns the first token and streams the
KV back over the request plane (docs/llm.md, "Disaggregation"). The
Processor's edge to PrefillWorker is what puts the prefill workers in the
graph (python/dynamo/llm.py says why); the Processor never calls them.
"""

from dynamo.llm import Frontend, PrefillWorker, Processor, Worker

Frontend.link(Processor).link(Worker)
Processor.link(PrefillWorker)
