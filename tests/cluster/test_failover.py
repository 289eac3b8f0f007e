"""Failover as a user sees it: a paused leader is deposed and acknowledges nothing it did not
commit, a damaged Raft log on a node that acknowledged a write costs nothing acknowledged, a
cluster whose founding node stays down after a crash of every node comes back under a leader of
its own, and a leader cut off from its majority acknowledges no write. (A node that rejoins
after its Raft log was damaged: test_rejoin.)"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Mapping

import pytest

from kayit.client import KayitClient
from kayit.protocol import ErrorCode, error_code
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.status import fetch_status
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, NodeProcess, wait_for

# A reply waited for on a raw socket may sit behind an election and a LEADER_WAIT (5 s).
_REPLY_TIMEOUT = 60.0


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _node_at(cluster: Cluster, address: str) -> NodeProcess:
    (node,) = [node for node in cluster.nodes if node.grpc_port == _port_of(address)]
    return node


def _client_port(node: NodeProcess) -> int:
    assert node.client_port is not None
    return node.client_port


def _own_status(node: NodeProcess) -> pb.StatusReply | None:
    """What ``node`` itself says (not whoever leads); None if it does not answer."""
    try:
        return fetch_status(f"127.0.0.1:{node.grpc_port}", timeout=1)
    except ConnectionError:
        return None


def _leader_after(cluster: Cluster, term: int) -> pb.StatusReply | None:
    """The status of the node that leads now if it was elected in a term after ``term``."""
    try:
        status = cluster.status()
    except ConnectionError:
        return None
    return status if status.term > term else None


def _wait_for_leader_after(cluster: Cluster, term: int, timeout: float = 30) -> pb.StatusReply:
    found: list[pb.StatusReply] = []

    def elected() -> bool:
        status = _leader_after(cluster, term)
        if status is not None:
            found.append(status)
        return status is not None

    wait_for(elected, timeout, f"a leader in a term after {term}")
    return found[-1]


def _read_through(port: int, ids: Iterable[str]) -> dict[str, bytes]:
    ids = list(ids)
    with KayitClient("127.0.0.1", port, timeout=_REPLY_TIMEOUT) as client:
        replies = client.pipeline([f"GET {key}".encode() for key in ids])
    return dict(zip(ids, replies, strict=True))


def _misread_through(port: int, expected: Mapping[str, str]) -> dict[str, bytes]:
    """The ids whose GET through the client port ``port`` does not answer the expected value,
    with what it answered."""
    replies = _read_through(port, expected)
    return {key: reply for key, reply in replies.items() if reply != expected[key].encode()}


def _set_through(port: int, items: Mapping[str, str]) -> list[bytes]:
    with KayitClient("127.0.0.1", port, timeout=_REPLY_TIMEOUT) as client:
        return client.pipeline([f"SET {key} {value}".encode() for key, value in items.items()])


def _account_for_set(
    reply: bytes, key: str, value: str, expected: dict[str, str], refused: list[str]
) -> None:
    """Account for a SET whose reply the test could not foresee: an OK must have taken
    effect (``expected``), an error that says nothing was done must leave no trace
    (``refused``: read back as NOT_FOUND), and an unknown outcome (TIMEOUT) may go either
    way, so it is not read back at all."""
    if reply == b"OK":
        expected[key] = value
        return
    code = error_code(reply)
    assert code is not None, f"SET {key} answered {reply!r}, neither OK nor an error"
    if code.nothing_done:
        refused.append(key)


@pytest.mark.cluster
def test_a_paused_leader_is_deposed_and_acknowledges_only_what_a_leader_committed(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=4)
    expected = {f"a{n}": f"before-{n}" for n in range(100)}
    assert cluster.set_many(expected, chunk=50) == [b"OK"] * len(expected)
    before = cluster.status()
    old = _node_at(cluster, before.address)

    # Opened before the pause: the paused node's kernel keeps taking what is sent on it.
    with socket.create_connection(("127.0.0.1", _client_port(old)), _REPLY_TIMEOUT) as raw:
        old.pause()
        try:
            raw.sendall(b"SET queued sent-to-the-paused-leader\n")
            new = _wait_for_leader_after(cluster, before.term)
            assert new.address != before.address
            # Through a node that does not lead: forwarded to the new leader.
            (live, *_) = [
                n for n in cluster.nodes if n is not old and n.grpc_port != _port_of(new.address)
            ]
            overwrites = {f"a{n}": f"after-{n}" for n in range(0, 100, 4)}
            fresh = {f"b{n}": f"during-pause-{n}" for n in range(20)}
            written = overwrites | fresh
            assert _set_through(_client_port(live), written) == [b"OK"] * len(written)
            expected |= written
            # Sent after the overwrite of a0 was acknowledged: it must not read the old value.
            raw.sendall(b"GET a0\n")
        finally:
            old.resume()
        replies = raw.makefile("rb")
        queued_set = replies.readline().rstrip(b"\n")
        queued_get = replies.readline().rstrip(b"\n")
    print(f"\nthe deposed leader answered its queued SET with {queued_set!r}")

    assert queued_get == b"after-0" or error_code(queued_get) is not None, queued_get
    refused: list[str] = []
    _account_for_set(queued_set, "queued", "sent-to-the-paused-leader", expected, refused)

    # The old leader follows whoever leads now, in a later term than its own.
    def follows() -> bool:
        status = _own_status(old)
        if status is None or status.role != "member":
            return False
        try:
            leader = cluster.status()
        except ConnectionError:
            return False
        return status.leader_address == leader.address and leader.term > before.term

    wait_for(follows, 30, "the old leader to follow the new one")
    for node in cluster.nodes:
        port = _client_port(node)
        assert _misread_through(port, expected) == {}, node.name
        assert _read_through(port, refused) == {key: b"NOT_FOUND" for key in refused}, node.name


@pytest.mark.cluster
def test_a_write_survives_a_leader_crash_and_a_damaged_raft_log_on_a_node_that_acknowledged_it(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=4)
    assert cluster.set_many({"x": "old"}) == [b"OK"]
    before = cluster.status()
    leader = _node_at(cluster, before.address)
    damaged, slow, *missed = [node for node in cluster.nodes if node is not leader]
    # With two nodes down the write commits on exactly the leader, `damaged` and `slow`.
    for node in missed:
        node.kill()
    raft_log = cluster.data_dir / f"node-{damaged.grpc_port}" / "raft" / "log"
    size = raft_log.stat().st_size
    assert _set_through(_client_port(leader), {"x": "new"}) == [b"OK"]

    damaged.kill()
    data = bytearray(raft_log.read_bytes())
    assert len(data) > size  # it acknowledged the write's entry, so it had appended it
    data[(size + len(data)) // 2] ^= 0x01  # in the entry: the largest of what it appended
    raft_log.write_bytes(bytes(data))
    leader.kill()
    slow.pause()  # not a fault: Raft's safety holds whatever the timing
    try:
        for node in [damaged, *missed]:
            node.start()

        # The damaged node refuses its log: it sets it aside and asks to join as a new node.
        # Without Raft state it has no vote, so it cannot vote the write away.
        def waits_to_join() -> bool:
            status = _own_status(damaged)
            return status is not None and status.role == "joining"

        wait_for(waits_to_join, 30, "the damaged node to ask to join again")
        assert "raft/log is damaged" in damaged.log()
        assert "moved raft aside" in damaged.log()
        # A leader may be elected without the slow node only if it holds the write.
        deadline = time.monotonic() + 5
        while (new := _leader_after(cluster, before.term)) is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if new is not None:
            assert _read_through(_client_port(missed[0]), ["x"]) == {"x": b"new"}
    finally:
        slow.resume()
    _wait_for_leader_after(cluster, before.term)
    for node in [slow, *missed]:
        assert _read_through(_client_port(node), ["x"]) == {"x": b"new"}, node.name

    def rejoined() -> bool:
        status = _own_status(damaged)
        return status is not None and status.role != "joining"

    wait_for(rejoined, 30, "the damaged node to be admitted as a new node")
    assert _read_through(_client_port(damaged), ["x"]) == {"x": b"new"}


@pytest.mark.cluster
def test_after_every_node_crashed_the_others_elect_a_leader_without_the_founder(
    start_cluster: ClusterFactory,
) -> None:
    """test_restarts restarts every node after a crash of the whole cluster; here the node
    that formed the cluster (the one the others were told to --join) stays down: the others
    resume from their Raft state, elect a leader among themselves and serve everything."""
    cluster = start_cluster(tolerance=1, members=2)
    expected = {f"k{n}": f"v{n}" for n in range(200)}
    assert cluster.set_many(expected, chunk=100) == [b"OK"] * len(expected)
    term = cluster.status().term

    for node in cluster.nodes:
        node.kill()
    survivors = list(cluster.members.values())
    for node in survivors:
        node.start()
    new = _wait_for_leader_after(cluster, term)
    assert _port_of(new.address) in cluster.member_ports

    for node in survivors:
        assert _misread_through(_client_port(node), expected) == {}, node.name
    first = _client_port(survivors[0])
    assert _set_through(first, {"k0": "after the crash"}) == [b"OK"]
    for node in survivors:
        assert _read_through(_client_port(node), ["k0"]) == {"k0": b"after the crash"}


@pytest.mark.cluster
def test_a_leader_cut_off_from_its_majority_steps_down_and_acknowledges_no_write(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=4)
    expected = {f"k{n}": f"v{n}" for n in range(100)}
    assert cluster.set_many(expected, chunk=50) == [b"OK"] * len(expected)
    before = cluster.status()
    leader = _node_at(cluster, before.address)
    follower, *cut_off = [node for node in cluster.nodes if node is not leader]
    assert len(cut_off) == 3

    refused: list[str] = []
    for node in cut_off:
        node.pause()
    try:
        # At once: the leader does not yet know it is alone.
        (racing,) = _set_through(_client_port(leader), {"racing": "x"})
        print(f"\na SET as the majority went silent answered {racing!r}")
        assert racing != b"OK"
        _account_for_set(racing, "racing", "x", {}, refused)

        # CheckQuorum: a leader that hears from no majority for an election timeout steps down.
        def stepped_down() -> bool:
            status = _own_status(leader)
            return status is not None and status.role != "leader"

        wait_for(stepped_down, 30, "the cut-off leader to step down")
        # Through the old leader and through the follower with it, side by side: neither
        # finds a leader (two of five votes elect none), and nothing is done.
        sockets = [
            socket.create_connection(("127.0.0.1", _client_port(node)), _REPLY_TIMEOUT)
            for node in (leader, follower)
        ]
        keys = ["via-old-leader", "via-follower"]
        try:
            for raw, key in zip(sockets, keys, strict=True):
                raw.sendall(f"SET {key} y\n".encode())
            alone = [raw.makefile("rb").readline().rstrip(b"\n") for raw in sockets]
        finally:
            for raw in sockets:
                raw.close()
        print(f"SETs without a majority answered {alone!r}")
        codes = [error_code(reply) for reply in alone]
        assert all(code in (ErrorCode.NOLEADER, ErrorCode.NOREPLICAS) for code in codes), alone
        refused += keys
    finally:
        for node in cut_off:
            node.resume()

    _wait_for_leader_after(cluster, before.term)
    after = {f"k{n}": f"after-{n}" for n in range(0, 100, 5)}
    assert _set_through(_client_port(leader), after) == [b"OK"] * len(after)
    expected |= after
    for node in cluster.nodes:
        port = _client_port(node)
        assert _misread_through(port, expected) == {}, node.name
        assert _read_through(port, refused) == {key: b"NOT_FOUND" for key in refused}, node.name
