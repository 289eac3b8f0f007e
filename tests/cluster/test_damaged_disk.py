"""A node restarted on a damaged disk: a flipped byte in its journal costs at most its own copy
of the record it hit, and no other node deletes a good copy; a damaged Raft identity file stops
it with a clear message; a node whose data dir was lost joins again as a new node when told to
join, and makes no other node delete a copy when started as if it were forming a cluster."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from kayit.client import KayitClient
from kayit.rpc.status import fetch_status
from kayit.storage.naming import file_name
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, NodeProcess, wait_for

# Time for a leader to reconcile the members it has just admitted (about a second each).
_FIRST_RECONCILE = 2.0
# How long the cluster is watched, once the restarted node is back, for a copy deleted that
# should not be: a leader reconciles every node it hears from about a second after it does.
_SETTLE = 3.0
# SETs per pipelined write: a burst of 500 into a fresh cluster can run past the members'
# store deadlines on a loaded machine, which is not what these tests are about.
_CHUNK = 100


def _files(cluster: Cluster, port: int) -> set[str]:
    return {path.name for path in cluster.messages_dir(port).glob("*.msg")}


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _node_id(node: NodeProcess) -> str:
    return fetch_status(f"127.0.0.1:{node.grpc_port}", timeout=1).node_id


def _alive_ids(cluster: Cluster) -> set[str]:
    """The node that leads now and the nodes it hears from."""
    try:
        status = cluster.status()
    except ConnectionError:
        return set()
    return {status.node_id, *(m.node_id for m in status.members if m.alive)}


def _cluster_holding(start_cluster: ClusterFactory, count: int) -> tuple[Cluster, dict[str, str]]:
    """Four nodes at TOLERANCE=2 holding ``count`` acknowledged ids, once the copies the
    committed index places on each member are the files it has: a file counted from then on
    is a copy the cluster needs."""
    cluster = start_cluster(tolerance=2, members=3)
    # Writing once the leader has reconciled the members it admitted keeps these tests about
    # the restart, not about that first reconcile.
    time.sleep(_FIRST_RECONCILE)
    expected = {f"id-{n}": f"value {n}" for n in range(count)}
    assert cluster.set_many(expected, chunk=_CHUNK) == [b"OK"] * len(expected)

    def index_matches_disk() -> bool:
        try:
            status = cluster.status()
        except ConnectionError:
            return False
        assigned = {int(m.address.rsplit(":", 1)[1]): m.assigned for m in status.members}
        return all(
            assigned.get(port) == cluster.count_on_disk(port) for port in cluster.member_ports
        )

    wait_for(index_matches_disk, 10, "the index and the members' disks to agree")
    return cluster, expected


def _lost_copies(text: str) -> list[tuple[str, int]]:
    """(node id, count) of every "lost N copies" a leader logged."""
    found = re.findall(r"([0-9a-f]{12}) lost (\d+) copies; repair will make them again", text)
    return [(node_id, int(count)) for node_id, count in found]


def _misread_through(port: int, expected: dict[str, str]) -> list[str]:
    """The ids whose GET through the client port ``port`` does not answer the expected value."""
    with KayitClient("127.0.0.1", port) as client:
        replies = client.pipeline([f"GET {key}".encode() for key in expected])
    return [
        key
        for (key, value), reply in zip(expected.items(), replies, strict=True)
        if reply != value.encode()
    ]


def _restart_afresh(cluster: Cluster, args: list[str]) -> None:
    """Kill the node that formed the cluster, delete its data dir and start it with ``args``."""
    node = cluster.leader
    node.kill()
    shutil.rmtree(cluster.data_dir / f"node-{cluster.leader_port}")
    node.args = args
    node.start()


@pytest.mark.cluster
def test_a_flipped_byte_in_the_leaders_journal_costs_one_record_and_no_copies(
    start_cluster: ClusterFactory,
) -> None:
    cluster, expected = _cluster_holding(start_cluster, 600)
    damaged = cluster.leader
    damaged_id = _node_id(damaged)
    others = cluster.member_ports
    before = {port: _files(cluster, port) for port in [cluster.leader_port, *others]}
    assert sum(len(files) for files in before.values()) == 3 * len(expected)

    damaged.kill()
    journal = cluster.data_dir / f"node-{cluster.leader_port}" / "journal.log"
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0x01
    journal.write_bytes(bytes(data))
    offsets = {node.name: len(node.log()) for node in cluster.nodes}
    damaged.start()
    # It keeps its Raft state (node-*/raft), so it resumes under its node id, and whoever
    # leads now (the others chose a leader meanwhile) hears from it again.
    wait_for(lambda: damaged_id in _alive_ids(cluster), 20, "the restarted node to be back")
    assert _node_id(damaged) == damaged_id

    def since_restart(node: NodeProcess) -> str:
        return node.log()[offsets[node.name] :]

    assert "skipped 1 damaged records" in since_restart(damaged)
    # Every acknowledged id reads back: the damaged record's id has T other holders.
    assert cluster.misread(expected) == []
    time.sleep(_SETTLE)
    assert cluster.misread(expected) == []
    # The damage may cost the node its own copy of that record's id (made again by repair),
    # nothing more, and no other node any copy.
    lost = [loss for node in cluster.nodes for loss in _lost_copies(since_restart(node))]
    assert all(node_id == damaged_id for node_id, _ in lost), lost
    assert sum(count for _, count in lost) <= 1, lost
    after = {port: _files(cluster, port) for port in before}
    for port in others:
        assert after[port] >= before[port], f"the node on {port} deleted a copy"
    assert len(before[cluster.leader_port] - after[cluster.leader_port]) <= 1


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("name", "content", "complaint"),
    [
        ("node-id", b"not an id\n", "is damaged (it holds 'not an id')"),
        ("node-id", None, "is missing beside raft state"),
        ("cluster", b"{not json", "is damaged"),
        ("cluster", b'{"format": 1}\n', "is damaged (a field is missing or of the wrong type)"),
    ],
)
def test_a_damaged_raft_identity_file_stops_the_node_with_a_clear_message(
    start_cluster: ClusterFactory, name: str, content: bytes | None, complaint: str
) -> None:
    # There is no term file any more. What a node must know before it replays its Raft log is
    # its id and its cluster's facts, kept beside that log; a damaged one is never replaced,
    # as the node would then vote under another id, or in another cluster, with that state.
    cluster = start_cluster(tolerance=0, members=0)
    with cluster.client() as client:
        assert client.set("k", "v") == b"OK"
    cluster.wait_promoted(["k"])
    node = cluster.leader
    node.kill()
    node_dir = cluster.data_dir / f"node-{cluster.leader_port}"
    path = node_dir / "raft" / name
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    kept = {place: _tree(node_dir / place) for place in ("raft", "messages")}
    offset = len(node.log())

    node.start()
    assert node.process is not None
    assert node.process.wait(timeout=30) == 2
    text = node.log()[offset:]
    assert f"kayit node: {path} {complaint}" in text
    assert "move the raft directory aside and restart the node" in text
    assert "Traceback" not in text
    # Changed nothing: no new id, no new cluster, no copy gone. (The journal beside them is
    # compacted when the node opens its disk, before it reads its identity: same records.)
    assert {place: _tree(node_dir / place) for place in kept} == kept


@pytest.mark.cluster
def test_a_node_whose_data_dir_was_deleted_joins_again_as_a_new_node(
    start_cluster: ClusterFactory,
) -> None:
    cluster, expected = _cluster_holding(start_cluster, 300)
    node = cluster.leader
    old_id = _node_id(node)
    others = cluster.member_ports
    before = {port: _files(cluster, port) for port in others}

    # What an operator is told to do with a node whose disk was lost: join it to the cluster
    # (the data dir's cluster record leads it there too; see below and test_rejoin.py).
    args = [arg for arg in node.args if arg != "--leader"]
    _restart_afresh(cluster, [*args, "--join", f"127.0.0.1:{others[0]}"])

    def rejoined() -> bool:
        try:
            new_id = _node_id(node)
        except ConnectionError:
            return False
        return new_id != old_id and new_id in _alive_ids(cluster)

    wait_for(rejoined, 30, "the node to join under a new id")
    status = cluster.status()
    assert old_id not in {status.node_id, *(m.node_id for m in status.members)}
    assert cluster.misread(expected) == []
    for port in others:
        assert _files(cluster, port) >= before[port], f"the node on {port} deleted a copy"

    # The copies the old id held are gone with its disk: they are made again on live nodes,
    # so that every id has TOLERANCE + 1 copies again.
    ports = [cluster.leader_port, *others]

    def copies(key: str) -> int:
        name = file_name(key)
        return sum((cluster.messages_dir(port) / name).exists() for port in ports)

    wanted = cluster.tolerance + 1
    wait_for(
        lambda: all(copies(key) >= wanted for key in expected), 20, "the copies to be repaired"
    )
    for port in others:
        assert _files(cluster, port) >= before[port], f"the node on {port} deleted a copy"
    assert cluster.misread(expected) == []


@pytest.mark.cluster
def test_a_leader_whose_data_dir_was_deleted_makes_no_member_delete_a_copy(
    start_cluster: ClusterFactory,
) -> None:
    cluster, expected = _cluster_holding(start_cluster, 300)
    others = cluster.member_ports
    before = {port: _files(cluster, port) for port in others}

    # Restarted with the same command line: --leader, but the data dir's cluster record says
    # which cluster it belongs to, so it joins that one again under a new id. Meanwhile and
    # after, no member deletes a copy, and they keep serving every acknowledged id.
    _restart_afresh(cluster, cluster.leader.args)
    cluster.leader.wait_ready()
    time.sleep(_SETTLE)
    for member in cluster.members.values():
        assert member.client_port is not None
        assert _misread_through(member.client_port, expected) == []
    for port in others:
        assert _files(cluster, port) >= before[port], f"the node on {port} deleted a copy"
