"""Re-replication: copies lost with a dead member are made again on live members."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import wait_for

REPAIR_AFTER = 2.0


@pytest.mark.cluster
def test_copies_of_a_dead_member_are_made_again_so_a_second_failure_loses_nothing(
    start_cluster: ClusterFactory,
) -> None:
    """T=1: two copies of each message, the leader's and one member's. After a member dies
    and repair runs, losing the leader's copies (a second failure) must lose nothing; without
    repair the dead member's messages would be gone."""
    cluster = start_cluster(
        tolerance=1, members=3, extra=("--repair-after", str(REPAIR_AFTER), "--report-every", "1")
    )
    items = {f"r{n}": f"value {n}" for n in range(300)}
    assert cluster.set_many(items) == [b"OK"] * 300
    first, second, third = cluster.member_ports

    cluster.members[first].kill()
    survivors = [second, third]

    def repaired() -> bool:
        return all(any(p in survivors for p in cluster.holders(k)) for k in items)

    wait_for(repaired, 30, "every message to have a copy on a live member")
    counts = {p: cluster.count_on_disk(p) for p in survivors}
    print(f"after repair: {counts} on the live members")
    assert sum(counts.values()) == 300  # TOLERANCE+1 = 2 copies: the leader's and one member's
    assert "under-replicated" in cluster.leader.log()

    for path in cluster.messages_dir(cluster.leader_port).glob("*.msg"):
        path.unlink()  # every GET must now be served by a live member
    replies = cluster.get_many(list(items))
    assert [k for k, r in zip(items, replies, strict=True) if r != items[k].encode()] == []


@pytest.mark.cluster
def test_repair_survives_a_leader_restart(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2, extra=("--repair-after", str(REPAIR_AFTER)))
    items = {f"s{n}": f"value {n}" for n in range(100)}
    assert cluster.set_many(items) == [b"OK"] * 100
    lost, kept = cluster.member_ports
    cluster.members[lost].kill()
    wait_for(lambda: all(cluster.holders(k) and kept in cluster.holders(k) for k in items), 30,
             "repair onto the member left")  # fmt: skip
    cluster.leader.kill()
    cluster.leader.start()
    wait_for(cluster.client_port_open, 20, "the restarted leader")
    cluster.wait_alive(1)
    for path in cluster.messages_dir(cluster.leader_port).glob("*.msg"):
        path.unlink()
    replies = cluster.get_many(list(items))
    assert [k for k, r in zip(items, replies, strict=True) if r != items[k].encode()] == []
