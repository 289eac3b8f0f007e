"""Results of a run: latency percentiles, the JSON object and the human summary."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kayit.bench.settings import COURSE_BIG_EVERY, COURSE_BIG_SIZE, BenchSettings


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
class CommandFigures:
    """One command type's share of a --course run."""

    requests: int
    errors: int
    latency: Latency


COMMAND_LABELS = {"set": "SET", "get": "GET", "big_set": "big SET"}
# Counted in error_replies for each request whose reply never came: its connection failed.
LOST = "no reply (connection failed)"
ERROR_KINDS_SHOWN = 5  # in the summary; --json has them all
WRONG = "wrong reply"  # error_replies' name for the errors it does not name otherwise


@dataclass(frozen=True, slots=True)
class BenchResult:
    settings: BenchSettings
    requests: int  # replies received
    errors: int  # ERROR / -ERR replies and replies of the wrong kind
    seconds: float  # from the first write to the last reply
    latency: Latency
    # --course only: figures per command type (set, get, big_set), and how often the connection
    # was opened again after an error or a failure.
    commands: Mapping[str, CommandFigures] | None = None
    reconnects: int = 0
    # How many of the errors were which error reply (by kayit.bench.wire.error_reason), or LOST.
    error_replies: Mapping[str, int] = field(default_factory=dict)

    @property
    def errors_by_kind(self) -> list[tuple[str, int]]:
        """error_replies, most frequent first, and WRONG for errors they do not account for."""
        kinds = sorted(self.error_replies.items(), key=lambda item: (-item[1], item[0]))
        other = self.errors - sum(self.error_replies.values())
        return [*kinds, *([(WRONG, other)] if other > 0 else [])]

    @property
    def throughput(self) -> float:
        return self._rate(self.requests)

    def as_json(self) -> dict[str, Any]:
        s = self.settings
        figures: dict[str, Any] = {
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
            "errors_by_kind": dict(self.errors_by_kind),
            "seconds": round(self.seconds, 3),
            "throughput": round(self.throughput, 1),
            "latency_ms": {
                "p50": round(self.latency.p50, 3),
                "p95": round(self.latency.p95, 3),
                "p99": round(self.latency.p99, 3),
                "max": round(self.latency.max, 3),
            },
        }
        if self.commands is not None:
            figures["course"] = True
            figures["reconnects"] = self.reconnects
            figures["commands"] = {
                name: {
                    "requests": one.requests,
                    "errors": one.errors,
                    "throughput": round(self._rate(one.requests), 1),
                    "latency_ms": {
                        "p50": round(one.latency.p50, 3),
                        "p99": round(one.latency.p99, 3),
                    },
                }
                for name, one in self.commands.items()
            }
        return figures

    def _rate(self, requests: int) -> float:
        return requests / self.seconds if self.seconds > 0 else 0.0

    def json_line(self) -> str:
        return json.dumps(self.as_json())

    def summary(self) -> str:
        s = self.settings
        low, high = s.size
        size = f"{low}" if low == high else f"{low}-{high}"
        mix = f"{s.set_ratio:.0%} SET / {1 - s.set_ratio:.0%} GET"
        lat = self.latency
        if self.commands is None:
            setting = (
                f"  settings    {s.connections} connections, pipeline {s.pipeline}, {mix}, "
                f"{size}-byte values, {s.keyspace} keys"
            )
        else:
            setting = (
                f"  settings    course mix: 1 connection, one command at a time, {mix}, "
                f"{size}-byte values, keys 0-{s.keyspace - 1}, a {COURSE_BIG_SIZE}-byte SET "
                f"every {COURSE_BIG_EVERY}th"
            )
        return "\n".join(
            [
                f"kayit bench: {s.protocol} protocol, "
                + ", ".join(s.where(n) for n in range(len(s.addresses))),
                setting,
                f"  requests    {self.requests} in {self.seconds:.3f} s, {self.errors} errors",
                *self._error_lines(),
                f"  throughput  {self.throughput:.1f} requests/s",
                f"  latency ms  p50 {lat.p50:.3f}  p95 {lat.p95:.3f}  p99 {lat.p99:.3f}  "
                f"max {lat.max:.3f}",
                *self._course_lines(),
                *([self.failure] if self.errors else []),
            ]
        )

    def _error_lines(self) -> list[str]:
        kinds = self.errors_by_kind
        if not kinds:
            return []
        shown = ", ".join(f"{count} {kind}" for kind, count in kinds[:ERROR_KINDS_SHOWN])
        more = len(kinds) - ERROR_KINDS_SHOWN
        return [f"  errors      {shown}" + (f" and {more} other kinds" if more > 0 else "")]

    def _course_lines(self) -> list[str]:
        if self.commands is None:
            return []
        lines = [
            f"  {COMMAND_LABELS.get(name, name):<10}  {self._rate(one.requests):.1f} requests/s"
            f"  p50 {one.latency.p50:.3f}  p99 {one.latency.p99:.3f}  "
            f"({one.requests} requests, {one.errors} errors)"
            for name, one in self.commands.items()
        ]
        return [*lines, f"  reconnects  {self.reconnects}"]

    @property
    def failure(self) -> str:
        """What a run with errors ends with (its exit code is 1)."""
        return (
            f"FAILED: {self.errors} of {self.requests} requests got an error, a wrong reply, "
            "or none"
        )
