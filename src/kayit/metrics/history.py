"""The last minutes of this node's client commands, for the dashboard: every few seconds,
how many were answered per second, how many failed, and their median and 99th percentile
latency over that interval, read off the counters and the latency histogram."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import asdict, dataclass

from kayit.metrics.instruments import LATENCY_BUCKETS, NodeMetrics

SAMPLE_EVERY = 2.0  # seconds
KEEP = 150  # samples: five minutes


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # Unix time, seconds
    per_second: float  # SETs and GETs answered
    errors_per_second: float  # of those, answered with an error
    # Forwarded here by other nodes: on the leader, the commands of the rest of the cluster.
    forwarded_per_second: float
    p50_ms: float | None  # None: no command in the interval
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class _Totals:
    answered: float
    failed: float
    forwarded: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last


class CommandHistory:
    def __init__(self, metrics: NodeMetrics, keep: int = KEEP) -> None:
        self._metrics = metrics
        self._samples: deque[Sample] = deque(maxlen=keep)
        self._last = self._totals()
        self._last_at = time.monotonic()

    def samples(self) -> list[dict[str, float | None]]:
        return [asdict(sample) for sample in self._samples]

    async def run(self, every: float = SAMPLE_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            self.sample()

    def sample(self) -> None:
        now = time.monotonic()
        totals = self._totals()
        elapsed = max(now - self._last_at, 1e-9)
        last, self._last, self._last_at = self._last, totals, now
        counts = [
            (bound, count - before)
            for (bound, count), (_, before) in zip(totals.buckets, last.buckets, strict=True)
        ]
        self._samples.append(
            Sample(
                at=time.time(),
                per_second=(totals.answered - last.answered) / elapsed,
                errors_per_second=(totals.failed - last.failed) / elapsed,
                forwarded_per_second=(totals.forwarded - last.forwarded) / elapsed,
                p50_ms=_milliseconds(quantile(0.5, counts)),
                p99_ms=_milliseconds(quantile(0.99, counts)),
            )
        )

    def _totals(self) -> _Totals:
        answered = failed = 0.0
        buckets = [0.0] * (len(LATENCY_BUCKETS) + 1)
        for meter in (self._metrics.sets, self._metrics.gets):
            for count in (meter.ok, meter.not_found):
                answered += count.value if count is not None else 0.0
            for count in meter.failed.values():
                answered += count.value
                failed += count.value
            for i, (_, cumulative) in enumerate(meter.latency.cumulative()):
                buckets[i] += cumulative
        bounds = (*LATENCY_BUCKETS, math.inf)
        forwarded = self._metrics.forwarded_in.value
        return _Totals(answered, failed, forwarded, tuple(zip(bounds, buckets, strict=True)))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative histogram ``buckets`` (upper bound, count; +Inf
    last), interpolated within its bucket as Prometheus's histogram_quantile does; None when
    empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bound: say no more than that
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
