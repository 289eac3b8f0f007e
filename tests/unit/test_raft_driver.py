"""Three RaftDrivers in one process, talking over real gRPC on loopback ports; and how the
driver merges a Ready's appends."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.consensus.driver import (
    DriverConfig,
    DriverStopped,
    ProposalDropped,
    RaftDriver,
    coalesce,
)
from kayit.consensus.messages import (
    AppendRequest,
    Entry,
    HardState,
    Message,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from kayit.consensus.node import NotLeaderError, RaftConfig, RaftNode, Role
from kayit.consensus.storage import MemoryStorage
from kayit.rpc.channels import SERVER_OPTIONS
from kayit.rpc.kayit_pb2_grpc import RaftServicer, add_RaftServicer_to_server
from kayit.rpc.raft_service import RaftService
from kayit.rpc.raft_transport import GrpcRaftTransport, TransportOptions
from tests.waiting import eventually

CLUSTER = "test-cluster"
IDS = ("n1", "n2", "n3")


class CommandList:
    """The state machine: the commands applied, in order."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.restores = 0

    def apply(self, entry: Entry) -> object:
        self.commands.append(entry.data)
        return len(self.commands)

    def snapshot(self) -> Callable[[], bytes]:
        return partial(b"\n".join, list(self.commands))

    def restore(self, data: bytes) -> None:
        self.commands = data.split(b"\n") if data else []
        self.restores += 1


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self.syncs = 0

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        self.saves += 1
        super().save(hard_state, entries, snapshot)

    def sync(self) -> None:
        self.syncs += 1


class Cluster:
    """Nodes with their own gRPC server each; ``cut`` holds (from, to) links that are down."""

    def __init__(
        self,
        config: DriverConfig | None = None,
        options: TransportOptions | None = None,
        machine: Callable[[], CommandList] = CommandList,
    ) -> None:
        self.config = config or DriverConfig()
        self.options = options
        self.new_machine = machine
        self.addresses: dict[str, str] = {}
        self.cut: set[tuple[str, str]] = set()
        self.storages = {node_id: CountingStorage() for node_id in IDS}
        self.machines: dict[str, CommandList] = {}
        self.drivers: dict[str, RaftDriver] = {}
        self.servers: dict[str, grpc.aio.Server] = {}

    async def start(self, node_ids: Iterable[str] = IDS) -> None:
        for node_id in node_ids:
            await self._start(node_id)

    async def _start(self, node_id: str) -> None:
        storage = self.storages[node_id]
        persisted = storage.load()
        machine = self.new_machine()
        if persisted.snapshot.index:
            machine.restore(persisted.snapshot.data)
        rng = random.Random(node_id)
        node = RaftNode(node_id, IDS, rng, RaftConfig(), persisted)

        def resolve(peer: str) -> str | None:
            return None if (node_id, peer) in self.cut else self.addresses.get(peer)

        transport = GrpcRaftTransport(CLUSTER, resolve, self.options)
        driver = RaftDriver(node, storage, transport, machine, self.config)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        add_RaftServicer_to_server(RaftService(CLUSTER, driver.deliver), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.addresses[node_id] = f"127.0.0.1:{port}"
        self.machines[node_id], self.drivers[node_id] = machine, driver
        self.servers[node_id] = server
        driver.start()

    async def stop_server(self, node_id: str) -> None:
        await self.servers.pop(node_id).stop(None)

    async def crash(self, node_id: str) -> None:
        if node_id in self.servers:
            await self.stop_server(node_id)
        await self.drivers.pop(node_id).stop()

    async def close(self) -> None:
        for node_id in list(self.drivers):
            await self.crash(node_id)

    async def leader(self, timeout: float = 6.0) -> RaftDriver:
        """The leader, once every running node knows it."""

        def agreed() -> bool:
            known = {driver.leader_id for driver in self.drivers.values()}
            leader_id = known.pop() if len(known) == 1 else None
            return leader_id in self.drivers and self.drivers[leader_id].is_leader

        await eventually(agreed, timeout, "a leader all nodes know")
        leader_id = next(iter(self.drivers.values())).leader_id
        assert leader_id is not None
        return self.drivers[leader_id]


def run(scenario: Callable[[Cluster], Awaitable[None]], cluster: Cluster | None = None) -> None:
    """Run ``scenario`` on a started cluster; whatever happens, every server, driver and task
    is stopped at the end."""

    async def main() -> None:
        nodes = cluster or Cluster()
        try:
            await nodes.start()
            await asyncio.wait_for(scenario(nodes), 30.0)
        finally:
            await nodes.close()
        current = asyncio.current_task()
        assert [task for task in asyncio.all_tasks() if task is not current] == []

    asyncio.run(main())


def test_every_node_applies_concurrent_proposals_in_the_same_order() -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        saves_before = cluster.storages[leader.id].saves
        commands = [b"command-%d" % i for i in range(1000)]
        positions = await asyncio.gather(*(leader.propose(command) for command in commands))
        # Each proposal is answered with what applying it returned on the leader.
        applied = cluster.machines[leader.id].commands
        assert sorted(positions) == list(range(1, 1001))  # type: ignore[type-var]
        assert [applied[p - 1] for p in positions] == commands  # type: ignore[operator]
        # Proposals that arrive together share durable writes.
        assert cluster.storages[leader.id].saves - saves_before < 100
        await eventually(
            lambda: all(len(m.commands) == 1000 for m in cluster.machines.values()),
            5.0,
            "every node to apply every command",
        )
        assert all(m.commands == applied for m in cluster.machines.values())
        assert cluster.storages[leader.id].syncs >= 1

    run(scenario)


def test_a_crashed_leader_is_replaced_and_catches_up_when_it_restarts() -> None:
    async def scenario(cluster: Cluster) -> None:
        old = await cluster.leader()
        old_id = old.id
        for i in range(10):
            await old.propose(b"early-%d" % i)
        # Its messages stop reaching the others: what it is asked now cannot commit.
        cluster.cut |= {(old_id, peer) for peer in IDS}
        pending = [asyncio.create_task(old.propose(b"lost-%d" % i)) for i in range(5)]
        await asyncio.sleep(0.3)
        assert not any(task.done() for task in pending)
        await cluster.crash(old_id)
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(outcome, ProposalDropped) for outcome in outcomes)
        with pytest.raises(DriverStopped):
            await old.propose(b"too late")

        cluster.cut.clear()
        new = await cluster.leader(timeout=6.0)
        assert new.id != old_id and new.term > old.term
        for i in range(10):
            await new.propose(b"later-%d" % i)

        await cluster.start([old_id])
        expected = [b"early-%d" % i for i in range(10)] + [b"later-%d" % i for i in range(10)]
        await eventually(
            lambda: cluster.machines[old_id].commands == expected, 5.0, "the old leader to catch up"
        )
        assert all(m.commands == expected for m in cluster.machines.values())
        assert cluster.drivers[old_id].leader_id == new.id

    run(scenario)


def test_a_follower_behind_the_compacted_log_catches_up_from_a_chunked_snapshot() -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        behind = next(node_id for node_id in IDS if node_id != leader.id)
        await cluster.crash(behind)
        for start in range(0, 400, 50):
            await asyncio.gather(
                *(leader.propose(b"command-%d" % i) for i in range(start, start + 50))
            )
        stored = cluster.storages[behind].load()
        last = stored.snapshot.index + len(stored.entries)
        # Every node, not just this leader: on a loaded machine leadership may move meanwhile
        # (each node compacts at its own point), and a leader that still holds the entries sends
        # them, not a snapshot.
        await eventually(
            lambda: all(d.node.log.snapshot.index > last for d in cluster.drivers.values()),
            10.0,
            "every running node to compact its log past the crashed follower's",
        )
        assert len(cluster.machines[leader.id].snapshot()()) > 4 * 512  # several chunks

        await cluster.start([behind])
        expected = [b"command-%d" % i for i in range(400)]
        await eventually(
            lambda: cluster.machines[behind].commands == expected, 5.0, "the follower to catch up"
        )
        assert cluster.machines[behind].restores >= 1
        assert cluster.storages[behind].load().snapshot.index > 0

    config = DriverConfig(compact_every=100)
    run(scenario, Cluster(config, TransportOptions(chunk_bytes=512)))


def test_commands_commit_while_a_snapshot_is_encoded_off_the_loop() -> None:
    encoding = threading.Event()
    release = threading.Event()
    threads: list[threading.Thread] = []

    class SlowToEncode(CommandList):
        def snapshot(self) -> Callable[[], bytes]:
            encode = super().snapshot()

            def slowly() -> bytes:
                threads.append(threading.current_thread())
                encoding.set()
                release.wait(10.0)
                return encode()

            return slowly

    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        early = [b"early-%d" % i for i in range(60)]
        for command in early:  # one entry each: the log passes compact_every
            await leader.propose(command)
        await eventually(encoding.is_set, 5.0, "a snapshot to be encoded")
        # Meanwhile the loop goes on: new commands commit and are applied.
        late = [b"late-%d" % i for i in range(20)]
        await asyncio.wait_for(asyncio.gather(*(leader.propose(c) for c in late)), 5.0)
        assert leader.node.log.snapshot.index == 0 and not release.is_set()
        assert threading.main_thread() not in threads
        release.set()
        await eventually(lambda: leader.node.log.snapshot.index > 0, 5.0, "the log to be compacted")
        # The snapshot is the state when it was taken, not when it was encoded.
        stored = cluster.storages[leader.id].load().snapshot.data.split(b"\n")
        assert 40 <= len(stored) <= len(early) and stored == early[: len(stored)]
        assert cluster.machines[leader.id].commands == early + late

    cluster = Cluster(DriverConfig(compact_every=50, compact_jitter=0), machine=SlowToEncode)
    try:
        run(scenario, cluster)
    finally:
        release.set()


def test_the_nodes_do_not_all_compact_at_the_same_entry() -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        for i in range(200):  # one entry at a time
            await leader.propose(b"command-%d" % i)
        drivers = cluster.drivers.values()
        await eventually(
            lambda: all(d.node.log.snapshot.index for d in drivers), 5.0, "every node to compact"
        )
        assert len({d.node.log.snapshot.index for d in drivers}) > 1
        assert all(100 <= d.node.log.snapshot.index < 200 for d in drivers)

    run(scenario, Cluster(DriverConfig(compact_every=100, compact_jitter=0.5)))


def test_a_leader_cut_off_from_the_others_serves_reads_only_under_its_lease() -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        await leader.propose(b"before")
        await eventually(leader.reads_under_lease, 2.0, "a lease")
        for node_id in IDS:
            if node_id != leader.id:
                await cluster.stop_server(node_id)
        # No other leader can be elected within the lease: reads need nobody's answer...
        await asyncio.wait_for(leader.read_barrier(), 0.1)
        # ...until it runs out, well within an election timeout.
        await eventually(lambda: not leader.reads_under_lease(), 1.0, "the lease to end")
        read = asyncio.create_task(leader.read_barrier())
        proposal = asyncio.create_task(leader.propose(b"after"))
        # CheckQuorum deposes it within two election timeouts.
        with pytest.raises(NotLeaderError):
            await asyncio.wait_for(read, 6.0)
        with pytest.raises(ProposalDropped):
            await proposal
        assert leader.role is not Role.LEADER
        with pytest.raises(NotLeaderError):
            await leader.read_barrier()

    run(scenario)


def test_a_paused_leader_serves_nothing_under_its_lease_until_a_quorum_answers_again() -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        await eventually(leader.reads_under_lease, 2.0, "a lease")
        # The whole process stops, as under SIGSTOP: no tick, no message, no task runs.
        time.sleep(DriverConfig().tick_seconds * RaftConfig().election_ticks)
        assert not leader.reads_under_lease()
        if leader.is_leader:  # the followers may have elected another meanwhile
            await eventually(leader.reads_under_lease, 2.0, "the lease renewed")

    run(scenario)


def test_leadership_moves_to_the_node_it_is_handed_to() -> None:
    async def scenario(cluster: Cluster) -> None:
        leader = await cluster.leader()
        await leader.propose(b"x")
        target = next(node_id for node_id in IDS if node_id != leader.id)
        changes = asyncio.create_task(cluster.drivers[target].wait_for_change())
        leader.transfer_leadership(target)
        await eventually(lambda: cluster.drivers[target].is_leader, 4.0, "the transfer")
        assert changes.done()
        assert await cluster.drivers[target].propose(b"y") == 2
        with pytest.raises(NotLeaderError) as refused:
            await leader.propose(b"z")
        assert refused.value.leader_id == target

    run(scenario)


def test_messages_of_another_cluster_are_dropped() -> None:
    async def main() -> None:
        received: list[Message] = []
        server = grpc.aio.server(options=SERVER_OPTIONS)
        add_RaftServicer_to_server(RaftService(CLUSTER, received.append), server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        ours = GrpcRaftTransport(CLUSTER, lambda peer: address)
        theirs = GrpcRaftTransport("another-cluster", lambda peer: address)
        try:
            vote = VoteRequest(
                sender="x", recipient="n1", term=5, last_log_index=0, last_log_term=0
            )
            theirs.send(vote)
            await asyncio.sleep(0.3)
            ours.send(vote)
            await eventually(lambda: received != [], 3.0, "our own message")
            await asyncio.sleep(0.1)
            assert received == [vote]
        finally:
            await ours.close()
            await theirs.close()
            await server.stop(None)

    asyncio.run(main())


async def serve_raft(received: list[Message], port: int = 0) -> tuple[grpc.aio.Server, int]:
    """A Raft service on 127.0.0.1:``port`` (0: any) that keeps what it receives."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_RaftServicer_to_server(RaftService(CLUSTER, received.append), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


def test_a_peer_that_comes_back_on_its_port_hears_from_us_again() -> None:
    async def main() -> None:
        received: list[Message] = []

        server, port = await serve_raft(received)
        await server.stop(None)
        transport = GrpcRaftTransport(CLUSTER, lambda peer: f"127.0.0.1:{port}")
        try:
            for term in range(1, 4):  # nobody listens: the stream fails, and is retried
                transport.send(TimeoutNow(sender="x", recipient="n1", term=term))
                await asyncio.sleep(0.05)
            server, _ = await serve_raft(received, port)
            term = 4

            def heard() -> bool:
                nonlocal term
                term += 1
                transport.send(TimeoutNow(sender="x", recipient="n1", term=term))
                return received != []

            await eventually(heard, 5.0, "the transport to reconnect")
        finally:
            await transport.close()
            await server.stop(None)

    asyncio.run(main())


def test_the_first_message_after_a_peer_restarted_is_not_lost() -> None:
    """The stream to a peer that restarted is dead, and only a write tells: the message of that
    write (after a leader handed over to a restarted node, the votes it asked for) goes out
    again on a new stream instead of being dropped with the stream."""

    async def main() -> None:
        received: list[Message] = []

        server, port = await serve_raft(received)
        transport = GrpcRaftTransport(CLUSTER, lambda peer: f"127.0.0.1:{port}")
        try:
            first = TimeoutNow(sender="x", recipient="n1", term=1)
            transport.send(first)
            await eventually(lambda: received == [first], 3.0, "the first message")
            await server.stop(None)  # the peer restarts
            server, _ = await serve_raft(received, port)
            vote = VoteResponse(sender="x", recipient="n1", term=2, granted=True)
            transport.send(vote)
            await eventually(lambda: len(received) == 2, 3.0, "the message after the restart")
            assert received == [first, vote]
        finally:
            await transport.close()
            await server.stop(None)

    asyncio.run(main())


class PausedPeer(RaftServicer):  # type: ignore[misc]  # generated base class is untyped
    """Accepts streams and never reads them, as a SIGSTOPped process would."""

    def __init__(self) -> None:
        self.streams = 0

    async def Send(self, requests: object, context: object) -> None:
        self.streams += 1
        await asyncio.Event().wait()


def test_a_stream_that_stops_draining_is_abandoned_for_a_new_one() -> None:
    async def main() -> None:
        peer = PausedPeer()
        server = grpc.aio.server(options=SERVER_OPTIONS)
        add_RaftServicer_to_server(peer, server)
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        transport = GrpcRaftTransport(
            CLUSTER, lambda peer: address, TransportOptions(stall_seconds=0.2)
        )
        big = append(0, [Entry(1, 1, b"x" * 1_000_000)], 0)

        def reopened() -> bool:
            transport.send(big)  # never blocks, however full the stream
            return peer.streams >= 2

        try:
            await eventually(reopened, 5.0, "a second stream")
        finally:
            await transport.close()
            await server.stop(None)

    asyncio.run(main())


class FailingStorage(MemoryStorage):
    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        raise OSError("disk full")


class NoTransport:
    def send(self, message: Message) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_storage_failure_stops_the_driver() -> None:
    async def main() -> None:
        node = RaftNode("n1", ["n1"], random.Random(1))
        driver = RaftDriver(
            node, FailingStorage(), NoTransport(), CommandList(), DriverConfig(tick_seconds=0.01)
        )
        driver.start()
        try:
            with pytest.raises(DriverStopped):
                # A lone voter elects itself, and its vote cannot be made durable.
                for _ in range(200):
                    await asyncio.wait_for(driver.wait_for_change(), 2.0)
            assert isinstance(driver.failure, OSError)
            with pytest.raises(DriverStopped):
                await driver.propose(b"x")
        finally:
            await driver.stop()
        current = asyncio.current_task()
        assert [task for task in asyncio.all_tasks() if task is not current] == []

    asyncio.run(main())


class ThreadNotingStorage(MemoryStorage):
    """Notes on which thread each save runs, and says that only a new term's save blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_on: list[tuple[bool, int]] = []  # (whether it blocks, thread id)

    def save_blocks(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> bool:
        return hard_state is not None and hard_state.term != self.load().hard_state.term

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        blocks = self.save_blocks(hard_state, entries, snapshot)
        self.saved_on.append((blocks, threading.get_ident()))
        super().save(hard_state, entries, snapshot)


def test_saves_that_do_not_block_are_made_on_the_loop_and_the_others_off_it() -> None:
    async def main() -> None:
        storage = ThreadNotingStorage()
        node = RaftNode("n1", ["n1"], random.Random(1))
        machine = CommandList()
        driver = RaftDriver(node, storage, NoTransport(), machine, DriverConfig(tick_seconds=0.01))
        driver.start()
        try:
            await eventually(lambda: driver.is_leader, 5.0, "the lone voter to lead")
            assert await driver.propose(b"x") == 1
        finally:
            await driver.stop()
        assert machine.commands == [b"x"]
        loop_thread = threading.get_ident()
        assert {blocks for blocks, _ in storage.saved_on} == {True, False}
        for blocks, thread in storage.saved_on:
            assert (thread == loop_thread) is not blocks

    asyncio.run(main())


def append(prev: int, entries: Sequence[Entry], commit: int, to: str = "f") -> AppendRequest:
    return AppendRequest(
        sender="l",
        recipient=to,
        term=1,
        prev_log_index=prev,
        prev_log_term=1 if prev else 0,
        entries=tuple(entries),
        leader_commit=commit,
    )


def follower_after(messages: Iterable[Message]) -> RaftNode:
    follower = RaftNode("f", ["l", "f", "g"], random.Random(1))
    for message in messages:
        follower.step(message)
    return follower


@given(st.lists(st.integers(min_value=0, max_value=4), max_size=12), st.data())
def test_merged_appends_leave_a_follower_as_the_appends_one_by_one_would(
    sizes: list[int], pick: st.DataObject
) -> None:
    log = [Entry(index, 1, b"e%d" % index) for index in range(1, sum(sizes) + 1)]
    messages: list[Message] = []
    prev = commit = 0
    for size in sizes:
        commit = pick.draw(st.integers(min_value=commit, max_value=prev + size))
        messages.append(append(prev, log[prev : prev + size], commit))
        if pick.draw(st.booleans()):  # a message to another peer changes nothing for "f"
            messages.append(append(prev, log[prev : prev + size], commit, to="g"))
        prev += size
    merged = coalesce(messages)
    one_by_one, at_once = follower_after(messages), follower_after(merged)
    assert at_once.log.entries == one_by_one.log.entries == log
    assert at_once.commit == one_by_one.commit
    assert sum(isinstance(m, AppendRequest) and m.recipient == "f" for m in merged) == min(
        1, len(sizes)
    )


def test_appends_that_do_not_continue_each_other_are_not_merged() -> None:
    entries = [Entry(index, 1) for index in range(1, 6)]
    gap = [append(0, entries[:2], 0), append(3, entries[3:], 0)]
    assert coalesce(gap) == gap
    timeout = TimeoutNow(sender="l", recipient="f", term=1)
    around: list[Message] = [append(0, entries[:2], 0), timeout, append(2, entries[2:], 0)]
    assert coalesce(around) == around
    older_commit = [append(0, entries[:2], 2), append(2, entries[2:], 1)]
    assert coalesce(older_commit) == older_commit
