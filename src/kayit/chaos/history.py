"""A history: what clients asked and what they were told, with monotonic timestamps.

It is recorded as events (one JSON object a line) so that a run cut short still leaves what it
saw: ``invoke`` when a request is sent, then ``ok``, ``fail`` (nothing was done) or ``info``
(the outcome is unknown: a timeout, a lost connection). ``pair`` turns events into operations.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class Kind(enum.StrEnum):
    SET = "set"
    GET = "get"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"  # definitely not done
    INFO = "info"  # may or may not have been done


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation. ``value`` is what a SET wrote, or what an ok GET read (None:
    NOT_FOUND). ``completed`` is when the outcome was known; for INFO it says nothing about
    when (or whether) the operation took effect."""

    process: int
    kind: Kind
    key: str
    value: str | None
    invoked: float
    completed: float
    outcome: Outcome
    error: str = ""

    def describe(self, origin: float = 0.0) -> str:
        span = f"[{self.invoked - origin:9.3f} .. {self.completed - origin:9.3f}]"
        shown = "NOT_FOUND" if self.value is None else repr(_short(self.value))
        what = f"SET {self.key} {shown}" if self.kind is Kind.SET else f"GET {self.key} -> {shown}"
        tail = f" ({self.error})" if self.error else ""
        return f"{span} p{self.process} {what} {self.outcome.value}{tail}"


def _short(value: str, limit: int = 24) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


class HistoryWriter:
    """Appends events to a JSON-lines file."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def invoke(self, process: int, kind: Kind, key: str, value: str | None, time: float) -> None:
        self._event("invoke", process, kind, key, value, time)

    def complete(
        self,
        process: int,
        kind: Kind,
        key: str,
        outcome: Outcome,
        value: str | None,
        time: float,
        error: str = "",
    ) -> None:
        self._event(outcome.value, process, kind, key, value, time, error)

    def _event(
        self,
        type_: str,
        process: int,
        kind: Kind,
        key: str,
        value: str | None,
        time: float,
        error: str = "",
    ) -> None:
        event = {"type": type_, "process": process, "f": kind.value, "key": key}
        event.update({"value": value, "time": time})
        if error:
            event["error"] = error
        self._stream.write(json.dumps(event) + "\n")


def read_events(path: Path) -> Iterator[dict[str, object]]:
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


def pair(events: Iterable[dict[str, object]]) -> list[Op]:
    """Match each invoke with its completion (a process has one operation open at a time). An
    invoke never completed (the run was cut short) becomes INFO at the history's end."""
    open_: dict[int, dict[str, object]] = {}
    ops: list[Op] = []
    last = 0.0
    for event in events:
        process = int(str(event["process"]))
        time = float(str(event["time"]))
        last = max(last, time)
        if event["type"] == "invoke":
            open_[process] = event
            continue
        outcome = Outcome(str(event["type"]))
        ops.append(_op(open_.pop(process), outcome, event["value"], time, event.get("error", "")))
    for invoke in open_.values():
        ops.append(_op(invoke, Outcome.INFO, None, last, "never completed"))
    ops.sort(key=lambda op: op.invoked)
    return ops


def _op(
    invoke: dict[str, object], outcome: Outcome, read: object, completed: float, error: object
) -> Op:
    """An operation from its invoke event and what its completion said; a SET's value is the
    one it sent, a GET's the one it read."""
    kind = Kind(str(invoke["f"]))
    value = invoke["value"] if kind is Kind.SET else read
    return Op(
        process=int(str(invoke["process"])),
        kind=kind,
        key=str(invoke["key"]),
        value=None if value is None else str(value),
        invoked=float(str(invoke["time"])),
        completed=completed,
        outcome=outcome,
        error=str(error),
    )
