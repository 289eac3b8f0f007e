"""The assignment's two crash scenarios, with real processes and SIGKILL.

The leader answers GET from its own copy first, so to prove that members' copies serve reads
the leader's copies are deleted before the reads: every reply then comes from a member.
"""

from __future__ import annotations

import pytest

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster


def _payload(n: int) -> str:
    return f"message-{n}-" + "x" * (n % 50)


def _drop_leader_copies(cluster: Cluster) -> None:
    for path in cluster.messages_dir(cluster.leader_port).glob("*.msg"):
        path.unlink()


@pytest.mark.cluster
def test_tolerance_2_four_members_even_load_and_reads_survive_a_killed_holder(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=4)
    items = {str(n): _payload(n) for n in range(1000)}

    assert cluster.set_many(items) == [b"OK"] * 1000

    counts = {port: cluster.count_on_disk(port) for port in cluster.member_ports}
    print(f"T=2, 4 members, 1000 SETs: on disk {counts}")
    assert sorted(counts.values()) == [500, 500, 500, 500]
    assert cluster.count_on_disk(cluster.leader_port) == 1000
    assert all(len(cluster.holders(k)) == 2 for k in items)

    victim = cluster.holders("42")[0]
    cluster.members[victim].kill()
    _drop_leader_copies(cluster)

    with cluster.client() as client:
        assert client.get("42") == items["42"].encode()
    assert cluster.misread(items) == []


@pytest.mark.cluster
def test_tolerance_3_six_members_even_load_and_reads_survive_two_killed_holders(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=3, members=6)
    items = {str(n): _payload(n) for n in range(9000)}

    assert cluster.set_many(items) == [b"OK"] * 9000

    counts = {port: cluster.count_on_disk(port) for port in cluster.member_ports}
    print(f"T=3, 6 members, 9000 SETs: on disk {counts}")
    assert sorted(counts.values()) == [4500] * 6

    victims = cluster.holders("7")[:2]
    for port in victims:
        cluster.members[port].kill()
    _drop_leader_copies(cluster)

    assert cluster.misread(items) == []
