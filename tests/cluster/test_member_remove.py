"""``kayit member remove`` as an operator uses it: a dead node removed through any node leaves
the cluster and its copies are made again; a removed node that still runs, or is started
again on its data dir, stops with exit code 2; a removed leader leaves to another node; what
cannot be removed is refused."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from kayit.client import KayitClient
from kayit.rpc.status import fetch_status
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, NodeProcess, wait_for

_REMOVED_MESSAGE = "this node was removed from the cluster"


def _member_remove(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kayit", "member", "remove", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _node_id(node: NodeProcess) -> str:
    return fetch_status(node.address, timeout=1).node_id


def _exit_code(node: NodeProcess, timeout: float = 30) -> int:
    assert node.process is not None
    return node.process.wait(timeout=timeout)


def _assert_stopped_as_removed(node: NodeProcess, log_from: int) -> None:
    """The node exited with 2, saying it was removed, and nothing went wrong on the way."""
    assert _exit_code(node) == 2
    text = node.log()[log_from:]
    assert _REMOVED_MESSAGE in text, text[-2000:]
    assert "an empty data dir" in text
    assert "Traceback" not in text


@pytest.mark.cluster
def test_a_dead_member_removed_through_a_follower_leaves_and_its_copies_are_made_again(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=3)
    expected = {f"k{n}": f"value {n}" for n in range(200)}
    assert cluster.set_many(expected) == [b"OK"] * len(expected)
    dead, via, _ = cluster.followers()
    dead_id = _node_id(dead)
    assert cluster.assigned()[dead.grpc_port] > 0
    dead.kill()

    # Asked of a follower: it redirects the command to the leader.
    done = _member_remove(cluster.workdir, dead.address, "--via", via.address)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed node {dead_id} ({dead.address})\n"

    members = cluster.status().members
    assert dead_id not in {m.node_id for m in members}
    assert dead.address not in {m.address for m in members}

    # Removal, not --repair-after (30 s here), makes the copies again: T+1 on live nodes.
    def placed_again() -> bool:
        return all(len(cluster.copies(key)) == cluster.tolerance + 1 for key in expected)

    wait_for(placed_again, 20, "every id to have TOLERANCE + 1 copies on live nodes")
    for key, value in expected.items():
        assert set(cluster.copies(key).values()) == {value.encode()}, key
    assigned = cluster.assigned()
    assert dead.grpc_port not in assigned
    assert sum(assigned.values()) >= len(expected)  # each id on a node besides the leader
    assert cluster.misread(expected) == []

    # It never heard of its removal: started again on its data dir, it asks and stops.
    offset = len(dead.log())
    dead.start()
    _assert_stopped_as_removed(dead, offset)
    assert cluster.misread(expected) == []


@pytest.mark.cluster
def test_a_removed_live_member_stops_with_exit_2_and_again_when_restarted(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    before = {f"b{n}": f"before {n}" for n in range(50)}
    assert cluster.set_many(before) == [b"OK"] * len(before)
    removed, _ = cluster.followers()
    removed_id = _node_id(removed)
    offset = len(removed.log())

    done = _member_remove(cluster.workdir, removed_id, "--via", cluster.leader.address)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed node {removed_id} ({removed.address})\n"
    _assert_stopped_as_removed(removed, offset)

    # The other two go on: every write lands on both, and every id reads back.
    assert removed_id not in {m.node_id for m in cluster.status().members}
    after = {f"a{n}": f"after {n}" for n in range(50)}
    assert cluster.set_many(after) == [b"OK"] * len(after)
    assert cluster.misread(before | after) == []

    offset = len(removed.log())
    removed.start()
    _assert_stopped_as_removed(removed, offset)
    assert removed_id not in {m.node_id for m in cluster.status().members}
    assert cluster.misread(before | after) == []


@pytest.mark.cluster
def test_the_leader_removed_leaves_to_another_and_stops(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    expected = {f"l{n}": f"led {n}" for n in range(50)}
    assert cluster.set_many(expected) == [b"OK"] * len(expected)
    leader = cluster.leader  # the node that formed the cluster leads it at first
    assert cluster.status().address == leader.address
    leader_id = _node_id(leader)
    offset = len(leader.log())

    done = _member_remove(cluster.workdir, leader.address, "--via", leader.address)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed node {leader_id} ({leader.address})\n"
    _assert_stopped_as_removed(leader, offset)

    # The two left elect a leader of their own and serve what the old one acknowledged.
    wait_for(lambda: _leads_without(cluster, leader_id), 30, "a leader among the two left")
    survivor = next(iter(cluster.members.values()))
    assert survivor.client_port is not None
    with KayitClient("127.0.0.1", survivor.client_port, timeout=30) as client:
        assert client.set("after", "the leader left") == b"OK"
        replies = client.pipeline([f"GET {key}".encode() for key in [*expected, "after"]])
    assert replies == [value.encode() for value in expected.values()] + [b"the leader left"]


def _leads_without(cluster: Cluster, removed_id: str) -> bool:
    try:
        status = cluster.status()
    except ConnectionError:
        return False
    return status.node_id != removed_id and removed_id not in {m.node_id for m in status.members}


@pytest.mark.cluster
def test_a_live_voter_whose_removal_would_leave_no_majority_is_kept(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    dead, live = (cluster.members[port] for port in cluster.member_ports)
    dead.kill()
    leader = cluster.leader.address
    wait_for(lambda: len(cluster.alive_members()) == 1, 20, "the leader to see the death")
    time.sleep(5.5)  # the metadata group counts a voter dead after 5 s without a word from it

    # Of the two voters left, only the leader would be alive.
    for member in (live, cluster.leader):
        refused = _member_remove(cluster.workdir, member.address, "--via", leader)
        assert refused.returncode == 1
        assert "would leave 1 of 2 voters alive, fewer than a majority" in refused.stderr
    assert live.running and cluster.leader.running
    assert len(cluster.status().members) == 2

    removed = _member_remove(cluster.workdir, dead.address, "--via", leader)
    assert removed.returncode == 0, removed.stderr


@pytest.mark.cluster
def test_what_cannot_be_removed_is_refused_with_exit_1(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=0, members=0)
    leader = cluster.leader.address
    leader_id = _node_id(cluster.leader)

    unknown = _member_remove(cluster.workdir, "127.0.0.1:1", "--via", leader)
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr.startswith("kayit member remove: no member at 127.0.0.1:1")

    last = _member_remove(cluster.workdir, leader, "--via", leader)
    assert last.returncode == 1
    assert last.stderr.startswith(
        f"kayit member remove: node {leader_id} at {leader} is the only member left"
    )
    assert cluster.leader.running

    # The first address that answers is used; none answering is an error too.
    vias = f"127.0.0.1:1,{leader}"
    through_second = _member_remove(cluster.workdir, "0123456789ab", "--via", vias)
    assert through_second.returncode == 1
    assert through_second.stderr.startswith(
        "kayit member remove: no member with node id 0123456789ab"
    )

    nobody = _member_remove(cluster.workdir, leader, "--via", "127.0.0.1:1")
    assert nobody.returncode == 1
    assert nobody.stderr == "kayit member remove: no answer from 127.0.0.1:1: UNAVAILABLE\n"

    usage = _member_remove(cluster.workdir, leader, "--via", "host:no-port")
    assert usage.returncode == 2
    assert "not a port number in 'host:no-port'" in usage.stderr
