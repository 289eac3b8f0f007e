"""Forwarding clients' commands to the leader: over a real in-process gRPC server, with a
real Leader behind it (of a one-node cluster with TOLERANCE=0: it needs no other node)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from kayit.protocol import ErrorCode, GetCommand, SetCommand
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.kayit_pb2_grpc import NodeServicer, add_NodeServicer_to_server
from kayit.rpc.peers import Peers
from kayit.server.forwarding import (
    ClientCommands,
    Forwarder,
    connection_up,
    execute_forwarded,
)
from kayit.server.leadership import Leadership
from kayit.server.outcome import NOT_FOUND_OUTCOME, STORED, Failed, Found
from kayit.server.ports import free_ports
from tests.unit.leader_cluster import LeaderCluster
from tests.waiting import eventually

T = TypeVar("T")
Execute = Callable[[pb.ClientBatch], Awaitable[pb.ClientResults]]


class ExecuteOnly(NodeServicer):  # type: ignore[misc]  # generated base class is untyped
    """A node's gRPC service reduced to Execute; counts the calls and their commands."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute
        self.batches: list[int] = []

    async def Execute(
        self, request: pb.ClientBatch, context: grpc.aio.ServicerContext
    ) -> pb.ClientResults:
        self.batches.append(len(request.commands))
        return await self._execute(request)


@asynccontextmanager
async def leader_node(tmp_path: Path) -> AsyncIterator[Leadership]:
    """A node that formed a cluster of its own: its metadata group leads, and its Leader
    serves; its store is in ``tmp_path / "n1"``."""
    cluster = LeaderCluster(tmp_path)
    try:
        node = await cluster.bootstrap("n1", tolerance=0)
        leader = node.leader()
        await leader.ready()
        leadership = Leadership(node.address)
        leadership.lead(leader)
        yield leadership
    finally:
        await cluster.close()


@asynccontextmanager
async def serving(execute: Execute) -> AsyncIterator[tuple[str, ExecuteOnly]]:
    """A gRPC server on a free port whose Execute is ``execute``; yields its address."""
    server = grpc.aio.server()
    service = ExecuteOnly(execute)
    add_NodeServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        await server.stop(grace=None)


def run(scenario: Callable[[Peers], Awaitable[T]]) -> T:
    async def main() -> T:
        peers = Peers(timeout=2.0)
        try:
            async with asyncio.timeout(20):
                return await scenario(peers)
        finally:
            await peers.close()

    return asyncio.run(main())


def test_forwarded_commands_are_carried_out_by_the_leader_in_few_calls(tmp_path: Path) -> None:
    async def scenario(peers: Peers) -> None:
        async with leader_node(tmp_path) as leadership:

            async def execute(batch: pb.ClientBatch) -> pb.ClientResults:
                return await execute_forwarded(leadership, batch)

            async with serving(execute) as (address, service):
                forwarder = Forwarder(peers)
                assert await forwarder.execute(address, SetCommand("a", b"one")) == STORED
                sets = [
                    forwarder.execute(address, SetCommand(f"k{n}", b"v%d" % n)) for n in range(300)
                ]
                assert await asyncio.gather(*sets) == [STORED] * 300
                gets = [forwarder.execute(address, GetCommand(f"k{n}")) for n in range(300)]
                assert await asyncio.gather(*gets) == [Found(b"v%d" % n) for n in range(300)]
                assert await forwarder.execute(address, GetCommand("never")) == NOT_FOUND_OUTCOME
                assert sum(service.batches) == 602
                assert len(service.batches) < 100  # many commands per call
                leader = leadership.local
                assert leader is not None
                # The leader's copy is promoted once its index entry is applied.
                await eventually(lambda: leader.store.version("k7") is not None, 5.0, "promotion")
        assert (tmp_path / "n1" / "messages" / "k7.msg").read_bytes() == b"v7"

    run(scenario)


def test_nothing_listening_is_noleader_and_nothing_is_sent() -> None:
    async def scenario(peers: Peers) -> None:
        (port,) = free_ports(1)
        outcome = await Forwarder(peers).execute(f"127.0.0.1:{port}", SetCommand("a", b"x"))
        assert isinstance(outcome, Failed)
        assert outcome.code is ErrorCode.NOLEADER
        assert outcome.code.nothing_done
        assert "nothing was sent" in outcome.reason

    run(scenario)


def test_a_leader_that_does_not_answer_in_time_leaves_the_outcome_unknown() -> None:
    async def scenario(peers: Peers) -> None:
        never = asyncio.Event()

        async def hang(batch: pb.ClientBatch) -> pb.ClientResults:
            await never.wait()
            raise AssertionError("unreachable")

        async with serving(hang) as (address, _):
            outcome = await Forwarder(peers, deadline=0.3).execute(address, GetCommand("a"))
        assert isinstance(outcome, Failed)
        assert outcome.code is ErrorCode.TIMEOUT
        assert not outcome.code.nothing_done
        assert "DEADLINE_EXCEEDED" in outcome.reason

    run(scenario)


def test_an_answer_with_the_wrong_number_of_results_is_an_internal_error() -> None:
    async def scenario(peers: Peers) -> None:
        async def short(batch: pb.ClientBatch) -> pb.ClientResults:
            return pb.ClientResults()

        async with serving(short) as (address, _):
            outcome = await Forwarder(peers).execute(address, GetCommand("a"))
        assert outcome == Failed(
            ErrorCode.INTERNAL, f"the leader {address} answered 0 of 1 commands"
        )

    run(scenario)


def test_a_node_that_does_not_lead_refuses_forwarded_commands() -> None:
    leadership = Leadership("127.0.0.1:2")
    leadership.follow("127.0.0.1:3")
    batch = pb.ClientBatch(commands=[pb.ClientCommand(kind=pb.ClientCommand.GET, id="a")] * 2)
    results = asyncio.run(execute_forwarded(leadership, batch)).results
    assert [r.error_code for r in results] == ["NOLEADER", "NOLEADER"]
    assert results[0].reason == "127.0.0.1:2 does not lead; the leader is 127.0.0.1:3"


def test_gets_answered_from_memory_keep_their_place_among_a_batchs_results(
    tmp_path: Path,
) -> None:
    def command(kind: pb.ClientCommand.Kind, key: str, message: bytes = b"") -> pb.ClientCommand:
        return pb.ClientCommand(kind=kind, id=key, message=message)

    set_, get = pb.ClientCommand.SET, pb.ClientCommand.GET

    async def scenario() -> list[pb.ClientResult]:
        async with leader_node(tmp_path) as leadership:
            first = pb.ClientBatch(commands=[command(set_, "a", b"one")])
            assert (await execute_forwarded(leadership, first)).results[0].outcome == (
                pb.ClientResult.STORED
            )
            leader = leadership.local
            assert leader is not None
            await eventually(lambda: leader.get_at_once("a") == b"one", 5.0, "a in memory")
            batch = pb.ClientBatch(
                commands=[
                    command(get, "a"),
                    command(set_, "b", b"two"),
                    command(get, "never"),
                    command(set_, "bad id", b"x"),
                    command(get, "a"),
                ]
            )
            return list((await execute_forwarded(leadership, batch)).results)

    results = asyncio.run(scenario())
    found, stored, absent = pb.ClientResult.FOUND, pb.ClientResult.STORED, pb.ClientResult.NOT_FOUND
    assert [r.outcome for r in results] == [found, stored, absent, pb.ClientResult.ERROR, found]
    assert [results[0].value, results[4].value] == [b"one", b"one"]
    assert results[3].error_code == "BADREQUEST"


def test_bad_forwarded_commands_are_bad_requests_beside_good_ones(tmp_path: Path) -> None:
    async def scenario() -> list[pb.ClientResult]:
        async with leader_node(tmp_path) as leadership:
            batch = pb.ClientBatch(
                commands=[
                    pb.ClientCommand(kind=pb.ClientCommand.SET, id="bad id", message=b"x"),
                    pb.ClientCommand(kind=pb.ClientCommand.SET, id="good", message=b"x"),
                ]
            )
            return list((await execute_forwarded(leadership, batch)).results)

    bad, good = asyncio.run(scenario())
    assert (bad.error_code, good.outcome) == ("BADREQUEST", pb.ClientResult.STORED)


def test_client_commands_run_here_while_leading_and_fail_clearly_with_no_leader(
    tmp_path: Path,
) -> None:
    async def scenario(peers: Peers) -> None:
        async with leader_node(tmp_path) as leadership:
            # With no leader known, a command waits a little for one before it fails.
            commands = ClientCommands(leadership, Forwarder(peers), leader_wait=0.2)
            assert await commands.execute(SetCommand("a", b"here")) == STORED
            assert await commands.count() == 1
            leadership.follow(None)
            nobody = Failed(ErrorCode.NOLEADER, "no leader is known")
            assert await commands.execute(GetCommand("a")) == nobody
            assert await commands.count() == nobody

    run(scenario)


class FakeChannel:
    """Goes through the given connectivity states, one per change awaited; then stays."""

    def __init__(self, *states: grpc.ChannelConnectivity) -> None:
        self._states = list(states)

    def get_state(self, try_to_connect: bool = False) -> Any:
        return self._states[0]

    async def wait_for_state_change(self, last_observed_state: Any) -> None:
        if len(self._states) == 1:
            await asyncio.Event().wait()  # no more changes: wait for ever
        self._states.pop(0)


C = grpc.ChannelConnectivity


@pytest.mark.parametrize(
    ("states", "up"),
    [
        ((C.READY,), True),
        ((C.IDLE, C.CONNECTING, C.READY), True),
        ((C.IDLE, C.CONNECTING, C.TRANSIENT_FAILURE), False),
        ((C.TRANSIENT_FAILURE, C.CONNECTING, C.READY), False),  # in backoff: not waited for
        ((C.CONNECTING,), False),  # connecting for longer than the wait
        ((C.SHUTDOWN,), False),
    ],
)
def test_a_command_is_sent_only_over_a_connection_that_is_up(
    states: tuple[grpc.ChannelConnectivity, ...], up: bool
) -> None:
    assert asyncio.run(connection_up(FakeChannel(*states), wait=0.2)) is up
