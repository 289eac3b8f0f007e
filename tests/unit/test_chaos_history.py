"""The chaos harness's own pure parts: replies classified into outcomes, histories written as
events and paired back into operations."""

from __future__ import annotations

import io
import json

import pytest

from kayit.chaos.history import HistoryWriter, Kind, Outcome, pair
from kayit.chaos.workload import classify


@pytest.mark.parametrize(
    ("kind", "reply", "outcome", "value"),
    [
        (Kind.SET, b"OK", Outcome.OK, None),
        (Kind.GET, b"hello world", Outcome.OK, "hello world"),
        (Kind.GET, b"NOT_FOUND", Outcome.OK, None),
        (Kind.SET, b"ERROR NOREPLICAS only 1 live members", Outcome.FAIL, None),
        (Kind.SET, b"ERROR NOLEADER this node is not the leader", Outcome.FAIL, None),
        (Kind.GET, b"ERROR UNAVAILABLE no holder of 'k1' is reachable", Outcome.FAIL, None),
        (Kind.SET, b"ERROR TIMEOUT gave up", Outcome.INFO, None),
        (Kind.SET, b"ERROR INTERNAL internal error", Outcome.INFO, None),
        (Kind.SET, b"ERROR something without a code", Outcome.INFO, None),
        (Kind.SET, b"NOT_FOUND", Outcome.INFO, None),  # no SET is answered so
    ],
)
def test_replies_classify_into_outcomes(
    kind: Kind, reply: bytes, outcome: Outcome, value: str | None
) -> None:
    answer = classify(kind, reply)
    assert answer.outcome is outcome
    assert answer.value == value


def _events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_events_pair_into_operations_in_invocation_order() -> None:
    stream = io.StringIO()
    history = HistoryWriter(stream)
    history.invoke(0, Kind.SET, "k", "v1", 1.0)
    history.invoke(1, Kind.GET, "k", None, 1.5)
    history.complete(1, Kind.GET, "k", Outcome.OK, "v1", 2.5)
    history.complete(0, Kind.SET, "k", Outcome.INFO, "v1", 3.0, "timeout")
    ops = pair(_events(stream.getvalue()))
    assert [(op.process, op.kind, op.value, op.outcome) for op in ops] == [
        (0, Kind.SET, "v1", Outcome.INFO),
        (1, Kind.GET, "v1", Outcome.OK),
    ]
    assert (ops[0].invoked, ops[0].completed, ops[0].error) == (1.0, 3.0, "timeout")


def test_an_operation_never_answered_is_indeterminate() -> None:
    stream = io.StringIO()
    history = HistoryWriter(stream)
    history.invoke(0, Kind.SET, "k", "v1", 1.0)
    history.invoke(1, Kind.GET, "k", None, 2.0)
    history.complete(1, Kind.GET, "k", Outcome.OK, None, 4.0)
    ops = pair(_events(stream.getvalue()))
    (unanswered,) = [op for op in ops if op.kind is Kind.SET]
    assert unanswered.outcome is Outcome.INFO
    assert unanswered.value == "v1"
    assert unanswered.completed == 4.0  # the history's end
