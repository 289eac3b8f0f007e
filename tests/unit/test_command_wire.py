"""Forwarded commands and outcomes on the wire, and how each outcome reads in each protocol."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.protocol import ErrorCode, GetCommand, InvalidCommand, SetCommand, resp
from kayit.protocol.commands import MAX_ID_BYTES, ExistsCommand, KeyQuery
from kayit.rpc import kayit_pb2 as pb
from kayit.server.command_wire import (
    batch_to_pb,
    commands_from_pb,
    outcome_from_pb,
    outcome_to_pb,
)
from kayit.server.outcome import (
    NOT_FOUND_OUTCOME,
    PRESENT,
    RESP,
    RESP3,
    STORED,
    TEXT,
    Failed,
    Found,
    Outcome,
    render_query,
)

ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda key: not any(c.isspace() for c in key) and len(key.encode()) <= MAX_ID_BYTES
)
commands = st.one_of(
    st.builds(SetCommand, ids, st.binary(min_size=1, max_size=200)),
    st.builds(GetCommand, ids),
    st.builds(ExistsCommand, ids),
)
outcomes: st.SearchStrategy[Outcome] = st.one_of(
    st.just(STORED),
    st.just(NOT_FOUND_OUTCOME),
    st.just(PRESENT),
    st.builds(Found, st.binary(max_size=200)),
    st.builds(Failed, st.sampled_from(list(ErrorCode)), st.text(max_size=80)),
)


@given(st.lists(commands, max_size=20))
def test_commands_cross_the_wire_unchanged(
    sent: list[SetCommand | GetCommand | ExistsCommand],
) -> None:
    wire = pb.ClientBatch.FromString(batch_to_pb(sent).SerializeToString())
    assert commands_from_pb(wire) == sent


@given(outcomes)
def test_outcomes_cross_the_wire_unchanged(outcome: Outcome) -> None:
    wire = pb.ClientResult.FromString(outcome_to_pb(outcome).SerializeToString())
    assert outcome_from_pb(wire) == outcome


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (pb.ClientCommand(kind=pb.ClientCommand.GET, id=""), "missing id"),
        (pb.ClientCommand(kind=pb.ClientCommand.GET, id="a b"), "whitespace"),
        (pb.ClientCommand(kind=pb.ClientCommand.SET, id="a"), "needs a message"),
        (pb.ClientCommand(id="a", message=b"x"), "unknown forwarded command"),
    ],
)
def test_forwarded_commands_get_a_clients_checks(command: pb.ClientCommand, reason: str) -> None:
    (parsed,) = commands_from_pb(pb.ClientBatch(commands=[command]))
    assert isinstance(parsed, InvalidCommand)
    assert reason in parsed.reason


@pytest.mark.parametrize(
    "result",
    [
        pb.ClientResult(),  # no outcome at all
        pb.ClientResult(outcome=pb.ClientResult.ERROR, error_code="NEWCODE", reason="why"),
        pb.ClientResult(outcome=cast(pb.ClientResult.Outcome, 99)),  # from a newer leader
    ],
)
def test_an_answer_that_cannot_be_read_leaves_the_outcome_unknown(result: pb.ClientResult) -> None:
    outcome = outcome_from_pb(result)
    assert isinstance(outcome, Failed)
    assert outcome.code is ErrorCode.INTERNAL
    assert not outcome.code.nothing_done


def test_each_outcome_reads_as_the_leader_has_always_answered() -> None:
    failed = Failed(ErrorCode.NOREPLICAS, "only 1 live\nmembers")
    bad = Failed(ErrorCode.BADREQUEST, "missing id")
    assert [TEXT.render(o) for o in (STORED, Found(b"hi"), NOT_FOUND_OUTCOME, failed, bad)] == [
        b"OK\n",
        b"hi\n",
        b"NOT_FOUND\n",
        b"ERROR NOREPLICAS only 1 live members\n",
        b"ERROR BADREQUEST missing id\n",
    ]
    assert [RESP.render(o) for o in (STORED, Found(b"a\nb"), NOT_FOUND_OUTCOME, failed, bad)] == [
        b"+OK\r\n",
        b"$3\r\na\nb\r\n",
        b"$-1\r\n",
        b"-NOREPLICAS only 1 live members\r\n",
        b"-ERR missing id\r\n",
    ]
    assert TEXT.render(Found(b"a\nb")).startswith(b"ERROR BADREQUEST ")
    assert resp.bulk(None) == RESP.not_found


def test_reads_of_several_ids_answer_from_each_outcome() -> None:
    one, two = Found(b"one"), Found(b"second")
    failed = Failed(ErrorCode.UNAVAILABLE, "no holder")
    mget = KeyQuery("MGET", ("a", "b", "c"))
    assert render_query(mget, [one, NOT_FOUND_OUTCOME, two], RESP) == (
        b"*3\r\n$3\r\none\r\n$-1\r\n$6\r\nsecond\r\n"
    )
    assert render_query(mget, [one, NOT_FOUND_OUTCOME, two], RESP3) == (
        b"*3\r\n$3\r\none\r\n_\r\n$6\r\nsecond\r\n"
    )
    assert render_query(mget, [one, failed, two], RESP) == b"-UNAVAILABLE no holder\r\n"
    exists = KeyQuery("EXISTS", ("a", "a", "b"))
    assert render_query(exists, [PRESENT, PRESENT, NOT_FOUND_OUTCOME], RESP) == b":2\r\n"
    assert render_query(KeyQuery("EXISTS", ("a",)), [NOT_FOUND_OUTCOME], TEXT) == b"0\n"
    assert render_query(KeyQuery("STRLEN", ("b",)), [two], TEXT) == b"6\n"
    assert render_query(KeyQuery("STRLEN", ("c",)), [NOT_FOUND_OUTCOME], RESP) == b":0\r\n"
    assert render_query(KeyQuery("TYPE", ("a",)), [PRESENT], RESP3) == b"+string\r\n"
    assert render_query(KeyQuery("TYPE", ("c",)), [NOT_FOUND_OUTCOME], RESP) == b"+none\r\n"
