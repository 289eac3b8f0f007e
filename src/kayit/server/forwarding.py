"""Clients' commands on a node that does not lead: forwarded to the leader over gRPC.

A member gathers the commands of all its clients into ``Execute`` calls (many commands per
call, a few calls in flight), so pipelined clients do not pay a round trip per command. What
a client may conclude from a failure depends on whether the call left this node: a command
is sent only over a connection that is up, so "leader unreachable" is ``NOLEADER`` (nothing
was done), while a call that fails once sent (a deadline, a connection lost under it) leaves
the outcome unknown: ``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from kayit.batching import Batcher
from kayit.cluster.leader import ClusterError, Leader
from kayit.metadata.keyspace import MAX_PAGE, KeyPage
from kayit.protocol import ErrorCode, GetCommand, InvalidCommand, SetCommand
from kayit.protocol.glob import glob_matcher
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.peers import Peers
from kayit.server.command_wire import (
    batch_to_pb,
    commands_from_pb,
    failure_from_pb,
    outcome_from_pb,
    outcome_to_pb,
)
from kayit.server.leadership import Leadership
from kayit.server.outcome import DataCommand, Failed, Outcome, carry_out, found_at_once

log = logging.getLogger(__name__)

# One call carries at most this much, and at most this many calls are under way at once: so
# the leader holds at most their product of one member's commands.
_BATCH_ITEMS = 512
_BATCH_BYTES = 4 * 1024 * 1024
_CALLS_IN_FLIGHT = 4
# How long a command waits for the connection to the leader to come up before NOLEADER.
CONNECT_WAIT = 1.0
# A call's deadline. A batch may queue behind everything the leader is doing, so it only
# catches a leader that hangs (paused, cut off); a client of the leader itself has none.
EXECUTE_DEADLINE = 20.0
# How long a client's command waits for a leader while none answers, at least, and how often
# it looks again when no change is announced. A node waits longer with a slower heartbeat: see
# leader_wait().
LEADER_WAIT = 5.0
_RETRY_EVERY = 0.25
# An election timeout is 10 to 20 heartbeats; a split vote costs another: wait out two.
_ELECTION_HEARTBEATS = 40


def leader_wait(heartbeat: float) -> float:
    """How long a command waits for a leader on a node with this ``--heartbeat``."""
    return max(LEADER_WAIT, _ELECTION_HEARTBEATS * heartbeat)


class ChannelState(Protocol):
    """The part of a gRPC channel that tells whether its peer is reachable."""

    def get_state(self, try_to_connect: bool = False) -> Any: ...

    async def wait_for_state_change(self, last_observed_state: Any) -> None: ...


async def connection_up(channel: ChannelState, wait: float) -> bool:
    """True once ``channel`` is connected; False if it fails to connect (or stays connecting)
    within ``wait`` seconds. A channel in backoff after a failed attempt is not waited for:
    its peer was just found unreachable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        left = deadline - loop.time()
        if left <= 0 or state in _UNREACHABLE:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), left)
        except TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True


_UNREACHABLE = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


class Forwarder:
    """Sends commands to a leader by address; every failure comes back as an outcome."""

    def __init__(
        self,
        peers: Peers,
        *,
        connect_wait: float = CONNECT_WAIT,
        deadline: float = EXECUTE_DEADLINE,
    ) -> None:
        self._peers = peers
        self._connect_wait = connect_wait
        self._deadline = deadline
        # One per leader address: a new leader gets batches of its own.
        self._batchers: dict[str, Batcher[DataCommand, Outcome]] = {}

    async def execute(self, leader_address: str, command: DataCommand) -> Outcome:
        batcher = self._batchers.get(leader_address)
        if batcher is None:

            async def send(commands: list[DataCommand]) -> list[Outcome]:
                return await self._send(leader_address, commands)

            batcher = self._batchers[leader_address] = Batcher(
                send,
                max_items=_BATCH_ITEMS,
                max_bytes=_BATCH_BYTES,
                weigh=_weigh,
                in_flight=_CALLS_IN_FLIGHT,
            )
        return await batcher.submit(command)

    async def count(self, leader_address: str) -> int | Failed:
        """The number of messages the leader holds (DBSIZE)."""
        if not await connection_up(self._peers.channel(leader_address), self._connect_wait):
            return _unreachable(leader_address)
        try:
            reply = await self._peers.stub(leader_address).Status(
                pb.StatusRequest(), timeout=self._peers.timeout
            )
        except grpc.aio.AioRpcError as error:
            reason = f"the leader {leader_address} did not answer ({error.code().name})"
            return Failed(ErrorCode.TIMEOUT, reason)
        if reply.role != "leader":
            return Failed(ErrorCode.NOLEADER, f"{leader_address} does not lead")
        return int(reply.message_count)

    async def key_page(
        self, leader_address: str, cursor: int, count: int, pattern: bytes | None
    ) -> KeyPage | Failed:
        """A page of SCAN, from the leader (``Keys``)."""
        if not await connection_up(self._peers.channel(leader_address), self._connect_wait):
            return _unreachable(leader_address)
        request = pb.KeysRequest(cursor=cursor, count=count, pattern=pattern)
        try:
            reply = await self._peers.stub(leader_address).Keys(
                request, timeout=self._peers.timeout, metadata=self._peers.metadata()
            )
        except grpc.aio.AioRpcError as error:
            reason = f"the leader {leader_address} did not answer ({error.code().name})"
            return Failed(ErrorCode.TIMEOUT, reason)
        if reply.error_code:
            return failure_from_pb(reply.error_code, reply.reason)
        return KeyPage(list(reply.ids), reply.cursor)

    async def _send(self, address: str, commands: list[DataCommand]) -> list[Outcome]:
        if not await connection_up(self._peers.channel(address), self._connect_wait):
            return [_unreachable(address)] * len(commands)
        try:
            reply = await self._peers.stub(address).Execute(
                batch_to_pb(commands), timeout=self._deadline, metadata=self._peers.metadata()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.PERMISSION_DENIED:  # refused, not carried out
                refused = Failed(ErrorCode.NOLEADER, f"{address} refused: {error.details()}")
                return [refused] * len(commands)
            unknown = Failed(
                ErrorCode.TIMEOUT,
                f"the leader {address} did not answer ({error.code().name}); the command may "
                "or may not have been carried out",
            )
            return [unknown] * len(commands)
        if len(reply.results) != len(commands):
            wrong = Failed(
                ErrorCode.INTERNAL,
                f"the leader {address} answered {len(reply.results)} of {len(commands)} commands",
            )
            return [wrong] * len(commands)
        return [outcome_from_pb(result) for result in reply.results]


def _weigh(command: DataCommand) -> int:
    return len(command.message) if isinstance(command, SetCommand) else 0


def _unreachable(address: str) -> Failed:
    return Failed(ErrorCode.NOLEADER, f"the leader {address} is unreachable; nothing was sent")


NO_LEADER_KNOWN = Failed(ErrorCode.NOLEADER, "no leader is known")


class ClientCommands:
    """A client's SETs, GETs and the reads over the whole keyspace: carried out here while
    this node leads, else forwarded to the leader it knows."""

    def __init__(
        self, leadership: Leadership, forwarder: Forwarder, leader_wait: float = LEADER_WAIT
    ) -> None:
        self.leadership = leadership
        self._forwarder = forwarder
        self._leader_wait = leader_wait

    async def execute(self, command: DataCommand) -> Outcome:
        """While an election is under way a command that was not carried out (``NOLEADER``:
        nothing was done) waits for the next leader and goes to it, for ``leader_wait``
        seconds at most: a failover shows as a slow reply, not an error. So does a GET whose
        outcome is unknown (``TIMEOUT``): a read done twice changes nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._leader_wait
        while True:
            outcome = await self._execute_once(command)
            left = deadline - loop.time()
            if left <= 0 or not _worth_retrying(command, outcome):
                return outcome
            await self.leadership.wait_for_change(min(left, _RETRY_EVERY))

    async def _execute_once(self, command: DataCommand) -> Outcome:
        leader = self.leadership.local
        if leader is not None:
            return await carry_out(leader, command)
        address = self.leadership.leader_address
        if address is None:
            return NO_LEADER_KNOWN
        try:
            return await self._forwarder.execute(address, command)
        except Exception:
            log.exception("forwarding a command on %r failed", command.id)
            return _INTERNAL

    async def key_page(self, cursor: int, count: int, pattern: bytes | None) -> KeyPage | Failed:
        """A page of SCAN over the leader's committed index. Waits for a leader as
        ``execute`` does: reading twice changes nothing."""
        count = min(count, MAX_PAGE)  # what a page looks at anyway; and it fits the call

        async def once() -> KeyPage | Failed:
            leader = self.leadership.local
            if leader is not None:
                return await local_key_page(leader, cursor, count, pattern)
            address = self.leadership.leader_address
            if address is None:
                return NO_LEADER_KNOWN
            return await self._forwarder.key_page(address, cursor, count, pattern)

        return await self._read_with_leader_wait(once)

    async def keys(self, pattern: bytes | None) -> list[str] | Failed:
        """Every id that matches (KEYS): a whole walk of SCAN, in pages."""
        found: list[str] = []
        cursor = 0
        while True:
            page = await self.key_page(cursor, MAX_PAGE, pattern)
            if isinstance(page, Failed):
                return page
            found += page.ids
            cursor = page.cursor
            if cursor == 0:
                return found

    async def _read_with_leader_wait(
        self, read: Callable[[], Awaitable[KeyPage | Failed]]
    ) -> KeyPage | Failed:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._leader_wait
        while True:
            try:
                result = await read()
            except Exception:
                log.exception("reading the leader's keyspace failed")
                return _INTERNAL
            left = deadline - loop.time()
            retry = isinstance(result, Failed) and result.code in _READ_AGAIN
            if left <= 0 or not retry:
                return result
            await self.leadership.wait_for_change(min(left, _RETRY_EVERY))

    async def count(self) -> int | Failed:
        """The number of messages the leader holds (DBSIZE)."""
        leader = self.leadership.local
        if leader is not None:
            return leader.message_count
        address = self.leadership.leader_address
        if address is None:
            return NO_LEADER_KNOWN
        try:
            return await self._forwarder.count(address)
        except Exception:
            log.exception("asking the leader for its count failed")
            return _INTERNAL


_INTERNAL = Failed(ErrorCode.INTERNAL, "internal error; see the node's log")


_READ_AGAIN = (ErrorCode.NOLEADER, ErrorCode.TIMEOUT)


async def local_key_page(
    leader: Leader, cursor: int, count: int, pattern: bytes | None
) -> KeyPage | Failed:
    try:
        match = None if pattern is None else glob_matcher(pattern)
        return await leader.key_page(cursor, count, match)
    except ClusterError as error:
        return Failed(error.code, str(error))


def _worth_retrying(command: DataCommand, outcome: Outcome) -> bool:
    if not isinstance(outcome, Failed):
        return False
    return outcome.code is ErrorCode.NOLEADER or (
        outcome.code is ErrorCode.TIMEOUT and isinstance(command, GetCommand)
    )


async def execute_forwarded(leadership: Leadership, batch: pb.ClientBatch) -> pb.ClientResults:
    """The leader's side of ``Execute``: each command through the same path as its own
    clients' commands, side by side, answered in order."""
    leader = leadership.local
    if leader is None:
        where = leadership.leader_address
        known = f"; the leader is {where}" if where and where != leadership.address else ""
        refused = Failed(ErrorCode.NOLEADER, f"{leadership.address} does not lead{known}")
        return pb.ClientResults(results=[outcome_to_pb(refused)] * len(batch.commands))

    async def one(command: DataCommand | InvalidCommand) -> Outcome:
        if isinstance(command, InvalidCommand):
            return Failed(ErrorCode.BADREQUEST, command.reason)
        return await carry_out(leader, command)

    commands = commands_from_pb(batch)
    # GETs answered from memory take no task: the commands of one batch run side by side
    # (a member sends a command only once its connection's earlier ones on the id are done),
    # so answering some first changes nothing a client may see.
    outcomes: list[Outcome | None] = [
        found_at_once(leader, command.id) if isinstance(command, GetCommand) else None
        for command in commands
    ]
    waiting = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if len(waiting) == 1:  # as from a client that waits for each reply: no task to gather
        outcomes[waiting[0]] = await one(commands[waiting[0]])
    elif waiting:
        done = await asyncio.gather(*(one(commands[i]) for i in waiting))
        for i, outcome in zip(waiting, done, strict=True):
            outcomes[i] = outcome
    return pb.ClientResults(results=[outcome_to_pb(o) for o in outcomes if o is not None])


async def keys_forwarded(leadership: Leadership, request: pb.KeysRequest) -> pb.KeysReply:
    """The leader's side of ``Keys``."""
    leader = leadership.local
    if leader is None:
        return pb.KeysReply(
            error_code=ErrorCode.NOLEADER.value, reason=f"{leadership.address} does not lead"
        )
    pattern = request.pattern if request.HasField("pattern") else None
    page = await local_key_page(leader, request.cursor, request.count, pattern)
    if isinstance(page, Failed):
        return pb.KeysReply(error_code=page.code.value, reason=page.reason)
    return pb.KeysReply(ids=page.ids, cursor=page.cursor)
