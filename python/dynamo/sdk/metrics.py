"""A worker's own Prometheus metrics, next to the ones dynamo records.

Every worker serves the process's metrics on its health port
(``GET /metrics``, beside ``/live`` and ``/health``): the request plane's,
recorded by the C runtime, and any an endpoint adds here. The names follow
``prometheus_client``'s, so code written for it reads the same::

    from dynamo.sdk.metrics import Counter, Histogram

    TOKENS = Counter("myapp_tokens_total", "Tokens generated.", ["model"])
    LATENCY = Histogram("myapp_step_seconds", "Step time.")

    TOKENS.labels(model="llama").inc(12)
    LATENCY.observe(0.012)

Metrics live in the C registry of the process (one loop thread, nothing
locked): create them at import or in ``@async_on_start``, update them from
handlers. Creating one twice with the same name, type and labels gives the
same metric; with another type or labels it is a ``ValueError``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from dynamo import _core

# Prometheus' default buckets, in seconds.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0)


class _Child:
    """One label-value combination of a metric."""

    def __init__(self, metric: "_Metric", values: Tuple[str, ...]):
        self._m, self._values = metric._m, values

    def inc(self, amount: float = 1.0) -> None:
        self._m.add(self._values, float(amount))

    def dec(self, amount: float = 1.0) -> None:
        self._m.add(self._values, -float(amount))

    def set(self, value: float) -> None:
        self._m.set(self._values, float(value))

    def observe(self, value: float) -> None:
        self._m.observe(self._values, float(value))


class _Metric:
    _kind: int

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Optional[Sequence[float]] = None):
        self._labelnames = tuple(labelnames)
        self._m = _core.Metric(self._kind, name, documentation, list(self._labelnames),
                               list(buckets) if buckets is not None else None)

    def labels(self, *values: str, **named: str) -> _Child:
        """The child for these label values, by position or by name."""
        if values and named:
            raise ValueError("give label values by position or by name, not both")
        if named:
            missing = set(self._labelnames) ^ set(named)
            if missing:
                raise ValueError(f"labels {sorted(missing)} do not match {list(self._labelnames)}")
            values = tuple(named[n] for n in self._labelnames)
        if len(values) != len(self._labelnames):
            raise ValueError(f"expected {len(self._labelnames)} label values "
                             f"({', '.join(self._labelnames)}), got {len(values)}")
        return _Child(self, tuple(str(v) for v in values))

    def _unlabelled(self) -> _Child:
        if self._labelnames:
            raise ValueError(f"this metric has labels {list(self._labelnames)}: use .labels()")
        return _Child(self, ())


class Counter(_Metric):
    """Only goes up (a negative amount is ignored)."""
    _kind = _core.COUNTER

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)


class Gauge(_Metric):
    _kind = _core.GAUGE

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)


class Histogram(_Metric):
    _kind = _core.HISTOGRAM

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS):
        super().__init__(name, documentation, labelnames, buckets)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)


def render() -> bytes:
    """The process's metrics in Prometheus' text format, as /metrics serves them."""
    return _core.metrics_render()
