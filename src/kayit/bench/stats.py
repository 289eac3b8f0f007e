"""Results of a run: latency percentiles, the JSON object and the human summary."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kayit.bench.settings import BenchSettings


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds."""

    p50: float
    p95: float
    p99: float
    max: float


def percentiles(values: Iterable[float], points: Iterable[float]) -> list[float]:
    """Nearest-rank percentiles: the smallest value with at least ``p`` % of them at or below.

    ``points`` are in 0..100; no values gives 0.0 for every point.
    """
    ordered = sorted(values)
    if not ordered:
        return [0.0 for _ in points]
    count = len(ordered)
    return [ordered[min(count, max(1, math.ceil(point / 100 * count))) - 1] for point in points]


def latency_of(values_ms: Iterable[float]) -> Latency:
    p50, p95, p99, top = percentiles(values_ms, (50, 95, 99, 100))
    return Latency(p50=p50, p95=p95, p99=p99, max=top)


@dataclass(frozen=True, slots=True)
class BenchResult:
    settings: BenchSettings
    requests: int  # replies received
    errors: int  # ERROR / -ERR replies and replies of the wrong kind
    seconds: float  # from the first write to the last reply
    latency: Latency

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        s = self.settings
        return {
            "protocol": s.protocol,
            "host": s.host,
            "port": s.port,
            "addresses": [s.where(n) for n in range(len(s.addresses))],
            "connections": s.connections,
            "pipeline": s.pipeline,
            "set_ratio": s.set_ratio,
            "size": list(s.size),
            "keyspace": s.keyspace,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "throughput": round(self.throughput, 1),
            "latency_ms": {
                "p50": round(self.latency.p50, 3),
                "p95": round(self.latency.p95, 3),
                "p99": round(self.latency.p99, 3),
                "max": round(self.latency.max, 3),
            },
        }

    def json_line(self) -> str:
        return json.dumps(self.as_json())

    def summary(self) -> str:
        s = self.settings
        low, high = s.size
        size = f"{low}" if low == high else f"{low}-{high}"
        mix = f"{s.set_ratio:.0%} SET / {1 - s.set_ratio:.0%} GET"
        lat = self.latency
        return "\n".join(
            [
                f"kayit bench: {s.protocol} protocol, "
                + ", ".join(s.where(n) for n in range(len(s.addresses))),
                f"  settings    {s.connections} connections, pipeline {s.pipeline}, {mix}, "
                f"{size}-byte values, {s.keyspace} keys",
                f"  requests    {self.requests} in {self.seconds:.3f} s, {self.errors} errors",
                f"  throughput  {self.throughput:.1f} requests/s",
                f"  latency ms  p50 {lat.p50:.3f}  p95 {lat.p95:.3f}  p99 {lat.p99:.3f}  "
                f"max {lat.max:.3f}",
                *([self.failure] if self.errors else []),
            ]
        )

    @property
    def failure(self) -> str:
        """What a run with errors ends with (its exit code is 1)."""
        return (
            f"FAILED: {self.errors} of {self.requests} requests got an error, a wrong reply, "
            "or none"
        )
