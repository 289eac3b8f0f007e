"""The chaos harness's own parts: replies classified into outcomes, a client connection that
moves on from a node that fails it, histories written as events and paired back into
operations, and the report's failover figures measured from a history."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from kayit.chaos.history import HistoryWriter, Kind, Op, Outcome, pair
from kayit.chaos.nemesis import Fault, FaultKind
from kayit.chaos.report import RunSummary, render
from kayit.chaos.workload import Connection, classify
from kayit.server.ports import free_ports


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


def test_a_connection_moves_on_from_a_node_that_fails_it() -> None:
    async def scenario() -> list[tuple[Outcome, str | None]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(b"OK\n" if line.startswith(b"SET") else b"v1\n")
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        (down,) = free_ports(1)  # nothing listens there: a dead node
        connection = Connection([("127.0.0.1", down), ("127.0.0.1", port)], 0, timeout=5)
        answers = [
            await connection.request(Kind.SET, b"SET k v1"),
            await connection.request(Kind.GET, b"GET k"),
            await connection.request(Kind.GET, b"GET k"),
        ]
        connection.drop()
        server.close()
        await server.wait_closed()
        return [(answer.outcome, answer.value) for answer in answers]

    assert asyncio.run(scenario()) == [
        (Outcome.FAIL, None),  # nothing was sent to the dead node
        (Outcome.OK, "v1"),
        (Outcome.OK, "v1"),  # it stays on the node that answers
    ]


def _ack(invoked: float, completed: float, outcome: Outcome = Outcome.OK) -> Op:
    return Op(0, Kind.SET, "k", f"v{invoked}", invoked, completed, outcome)


def _summary(ops: list[Op], faults: list[Fault]) -> RunSummary:
    return RunSummary("run", ops, faults, [], [], 0.0, [])


def test_failover_is_measured_from_the_kill_to_the_first_answer_invoked_after_it() -> None:
    kill = Fault(FaultKind.LEADER_KILL, 0, 10.0, "node 0", ended=14.0)
    later_kill = Fault(FaultKind.LEADER_KILL, 2, 20.0, "node 2", ended=21.0)
    ops = [
        _ack(9.0, 10.5),  # invoked before the kill: answered by the old leader, no proof
        _ack(10.1, 15.0, Outcome.FAIL),  # NOLEADER: no answer from the cluster
        _ack(10.2, 16.0, Outcome.INFO),
        _ack(10.3, 13.5),  # the first answered again: 3.5 s
        _ack(11.0, 12.9),  # invoked later, answered sooner: 2.9 s
        _ack(20.5, 21.5),  # after the second kill: 1.5 s
        Op(1, Kind.GET, "k", None, 20.6, 25.0, Outcome.OK),
    ]
    summary = _summary(ops, [kill, Fault(FaultKind.LEADER_PAUSE, 1, 18.0), later_kill])
    assert summary.failovers() == [pytest.approx(2.9), pytest.approx(1.5)]
    assert "failover after leader kills: 2 kills, median 2.20 s, max 2.90 s\n" in render(summary)


def test_a_kill_never_answered_after_is_reported_so() -> None:
    kill = Fault(FaultKind.LEADER_KILL, 0, 10.0, "node 0")
    summary = _summary([_ack(9.0, 11.0), _ack(10.5, 12.0, Outcome.FAIL)], [kill])
    assert summary.failovers() == [None]
    report = render(summary)
    assert "failover after leader kills: 1 kills, 1 not answered again" in report
    assert "leader unavailable" not in report
    assert "failover after leader kills: 0 kills\n" in render(_summary([_ack(1, 2)], []))
