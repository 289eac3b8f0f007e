"""Nodes killed with SIGKILL and started again on the same data: nothing acknowledged is lost."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, wait_for


def _write_and_overwrite(cluster: Cluster, count: int) -> dict[str, str]:
    first = {str(n): f"first {n}" for n in range(count)}
    assert cluster.set_many(first) == [b"OK"] * count
    latest = {str(n): f"second {n}" for n in range(0, count, 3)}
    assert cluster.set_many(latest) == [b"OK"] * len(latest)
    return first | latest


def _drop_leader_copies(cluster: Cluster) -> None:
    for path in cluster.messages_dir(cluster.leader_port).glob("*.msg"):
        path.unlink()


def _restart(cluster: Cluster) -> None:
    cluster.leader.kill()
    cluster.leader.start()
    wait_for(cluster.client_port_open, 20, "the restarted leader")


@pytest.mark.cluster
def test_leader_restart_keeps_every_acknowledged_message(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=2, members=4)
    expected = _write_and_overwrite(cluster, 300)

    _restart(cluster)
    cluster.wait_alive(4)  # the members rejoin by themselves

    assert cluster.misread(expected) == []
    status = cluster.status()
    assert status.message_count == 300
    assert status.term >= 2  # an election followed the kill


@pytest.mark.cluster
def test_versions_keep_growing_after_a_leader_restart(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=2, members=2)
    with cluster.client() as client:
        for n in range(5):
            assert client.set("k", f"before {n}") == b"OK"
    _restart(cluster)
    cluster.wait_alive(2)
    with cluster.client() as client:
        assert client.set("k", "after restart") == b"OK"
        _drop_leader_copies(cluster)
        # Members keep only a newer version: a reused (lower) one would leave them "before 4".
        assert client.get("k") == b"after restart"


@pytest.mark.cluster
def test_a_restarted_member_serves_its_copies_again(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    expected = _write_and_overwrite(cluster, 200)
    restarted, other = cluster.member_ports

    cluster.members[restarted].kill()
    cluster.members[restarted].start()
    cluster.members[restarted].wait_ready()
    cluster.wait_alive(2)
    _drop_leader_copies(cluster)
    cluster.members[other].kill()

    held = [k for k in expected if cluster.holders(k) == [restarted]]
    assert len(held) > 50
    assert cluster.misread({k: expected[k] for k in held}) == []


@pytest.mark.cluster
@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_whole_cluster_restart_keeps_every_acknowledged_message(
    start_cluster: ClusterFactory, fsync: str
) -> None:
    cluster = start_cluster(tolerance=2, members=3, extra=("--fsync", fsync))
    expected = _write_and_overwrite(cluster, 200)

    for node in cluster.nodes:
        node.kill()
    for node in cluster.nodes:
        node.start()
    for node in cluster.nodes:
        node.wait_ready()
    wait_for(cluster.client_port_open, 20, "the restarted leader")
    cluster.wait_alive(3)

    assert cluster.misread(expected) == []
    _drop_leader_copies(cluster)
    assert cluster.misread(expected) == []


@pytest.mark.cluster
def test_a_leader_stopped_with_sigterm_hands_leadership_over(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    before = cluster.status()
    assert before.address == f"127.0.0.1:{cluster.leader_port}"
    with cluster.client(cluster.members[cluster.member_ports[0]].client_port) as client:
        assert client.set("k", "before") == b"OK"
        assert cluster.leader.stop() == 0

        # The successor was named by the old leader (TimeoutNow), not found by an election
        # after a timeout: exactly one term later, and the old leader's log says to whom.
        def successor_leads() -> bool:
            try:
                return cluster.status().term > before.term
            except ConnectionError:
                return False

        wait_for(successor_leads, 5, "the successor's status")
        after = cluster.status()
        assert after.term == before.term + 1
        successor = next(m for m in before.members if m.address == after.address)
        assert f"handed leadership to node {successor.node_id}" in cluster.leader.log()
        assert client.set("k", "after") == b"OK"
        assert client.get("k") == b"after"


@pytest.mark.cluster
def test_nodes_killed_with_a_backlog_have_every_acknowledged_file_after_restart(
    start_cluster: ClusterFactory,
) -> None:
    """SETs are acknowledged once in the copy log; their files are written behind. Nodes
    killed right after the last OK, before the files are written, write them at start."""
    cluster = start_cluster(tolerance=1, members=2, extra=("--fsync", "always"))
    expected = {f"k{n}": f"{n} " + "v" * (500 + n % 1500) for n in range(2000)}
    lines = [f"SET {k} {v}".encode() for k, v in expected.items()]
    with cluster.client() as client:
        assert client.pipeline(lines) == [b"OK"] * len(lines)
    statuses = [node.own_status() for node in cluster.nodes]
    for node in cluster.nodes:
        node.kill()
    print(f"backlog when killed: {[status.backlog if status else '?' for status in statuses]}")

    for node in cluster.nodes:
        node.start()
    for node in cluster.nodes:
        node.wait_ready()
    cluster.wait_alive(2)
    cluster.wait_promoted(expected)

    for key, value in expected.items():
        copies = cluster.copies(key)
        assert len(copies) == cluster.tolerance + 1, key
        assert set(copies.values()) == {value.encode()}, key
