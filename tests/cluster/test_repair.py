"""Re-replication: copies lost with a dead node, or found damaged, are made again on live nodes,
so that every message is back to TOLERANCE + 1 copies; copies nobody needs any more are trimmed."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, wait_for

REPAIR_AFTER = 2.0
# SETs per pipelined write: a burst of 500 into a fresh cluster can run past the holders'
# store deadlines on a loaded machine and send copies elsewhere, which is not what these
# tests are about.
CHUNK = 100


def good_copies(cluster: Cluster, items: dict[str, str]) -> dict[str, list[int]]:
    """For each id, the running nodes whose committed copy holds its value."""
    return {
        key: sorted(p for p, copy in cluster.copies(key).items() if copy == value.encode())
        for key, value in items.items()
    }


def whole(cluster: Cluster, items: dict[str, str], tolerance: int) -> bool:
    """Whether every message has TOLERANCE + 1 good copies on running nodes."""
    return all(len(ports) >= tolerance + 1 for ports in good_copies(cluster, items).values())


@pytest.mark.cluster
def test_copies_of_a_dead_member_are_made_again_so_a_second_failure_loses_nothing(
    start_cluster: ClusterFactory,
) -> None:
    """T=1 on four nodes: two copies of each message, the leader's and one member's. After a
    member dies and repair runs, losing a second node, the leader itself, must lose nothing;
    without repair the dead member's messages would have been left on the leader alone."""
    cluster = start_cluster(
        tolerance=1,
        members=3,
        extra=("--repair-after", str(REPAIR_AFTER)),
        shared_client_port=True,  # clients reach whichever nodes are left
    )
    items = {f"r{n}": f"value {n}" for n in range(300)}
    assert cluster.set_many(items, chunk=CHUNK) == [b"OK"] * 300
    assert all(len(ports) == 2 for ports in good_copies(cluster, items).values())

    # Three of the four nodes vote (2T+1). The first to die is the one that does not, so that
    # after the second death two of three voters are left to elect a new leader.
    (first,) = [int(m.address.rsplit(":", 1)[1]) for m in cluster.status().members if not m.voter]
    cluster.members[first].kill()

    # Repaired once the committed index no longer places a copy on the dead member.
    wait_for(lambda: cluster.assigned()[first] == 0, 30, "the dead member's copies to be placed")
    assert "under-replicated" in cluster.leader.log()
    # kayit status says so: nothing is left to repair.
    wait_for(lambda: cluster.status().under_replicated == 0, 10, "no message left to repair")
    copies = good_copies(cluster, items)
    assert [k for k, ports in copies.items() if len(ports) != 2] == []  # TOLERANCE + 1, no more

    cluster.leader.kill()
    assert cluster.misread(items) == []
    assert cluster.status().message_count == 300


@pytest.mark.cluster
def test_repair_survives_a_leader_restart(start_cluster: ClusterFactory) -> None:
    """What repair placed is committed metadata: after the leader restarts, the copies it made
    on the member left are the ones read."""
    cluster = start_cluster(tolerance=1, members=2, extra=("--repair-after", str(REPAIR_AFTER)))
    items = {f"s{n}": f"value {n}" for n in range(100)}
    assert cluster.set_many(items) == [b"OK"] * 100
    lost, kept = cluster.member_ports
    cluster.members[lost].kill()
    wait_for(lambda: cluster.assigned()[lost] == 0, 30, "repair onto the member left")
    assert all(kept in ports for ports in good_copies(cluster, items).values())

    cluster.leader.kill()  # one of three voters left: no leader until it is back
    cluster.leader.start()
    wait_for(cluster.client_port_open, 20, "the restarted leader")
    cluster.wait_alive(1)
    for path in cluster.messages_dir(cluster.leader_port).glob("*.msg"):
        path.unlink()
    assert cluster.misread(items) == []


@pytest.mark.cluster
def test_a_returning_member_has_its_surplus_copies_trimmed(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=3, extra=("--repair-after", str(REPAIR_AFTER)))
    items = {f"t{n}": f"value {n}" for n in range(150)}
    assert cluster.set_many(items, chunk=CHUNK) == [b"OK"] * 150
    returning = cluster.member_ports[0]
    others = cluster.member_ports[1:]
    # The leader holds one copy of each message; the members share the others.
    assert cluster.assigned() == dict.fromkeys(cluster.member_ports, 50)
    assert cluster.count_on_disk(returning) == 50

    cluster.members[returning].kill()
    wait_for(lambda: cluster.assigned()[returning] == 0, 30, "repair")
    # The copies made again went to the least-loaded live nodes: half to each other member.
    assert sorted(cluster.assigned()[p] for p in others) == [75, 75]
    assert sorted(cluster.count_on_disk(p) for p in others) == [75, 75]

    cluster.members[returning].start()
    wait_for(lambda: cluster.count_on_disk(returning) == 0, 30, "the surplus copies to go")
    assert cluster.misread(items) == []


@pytest.mark.cluster
def test_a_member_back_with_an_old_copy_never_serves_it(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    with cluster.client() as client:
        assert client.set("x", "old") == b"OK"
    cluster.wait_promoted(["x"])
    (stale,) = cluster.holders("x")  # the leader holds the other copy
    (fresh,) = [p for p in cluster.member_ports if p != stale]
    cluster.members[stale].kill()
    with cluster.client() as client:
        assert client.set("x", "new") == b"OK"  # the dead holder is replaced
    cluster.wait_promoted(["x"])
    assert cluster.copies("x") == {cluster.leader_port: b"new", fresh: b"new"}

    cluster.members[stale].start()
    wait_for(lambda: not (cluster.messages_dir(stale) / "x.msg").exists(), 30, "the old copy to go")
    cluster.members[fresh].kill()  # two of three nodes are left: a majority
    (cluster.messages_dir(cluster.leader_port) / "x.msg").unlink()
    with cluster.client() as client:
        reply = client.get("x")
    assert reply != b"old"
    assert reply.startswith(b"ERROR UNAVAILABLE "), reply


@pytest.mark.cluster
def test_copies_damaged_by_hand_are_not_served_and_are_repaired(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=3)
    items = {f"d{n}": f"value {n}" for n in range(60)}
    assert cluster.set_many(items) == [b"OK"] * 60
    victim = cluster.member_ports[0]
    damaged = sorted(p.name for p in cluster.messages_dir(victim).glob("*.msg"))[:10]
    for n, name in enumerate(damaged):
        path = cluster.messages_dir(victim) / name
        if n % 2:
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[:3])
    leader_copies = cluster.messages_dir(cluster.leader_port)
    for name in damaged[:4]:
        (leader_copies / name).write_bytes(b"garbage")

    # Reads notice: the leader's damaged copies and the member's are passed over.
    assert cluster.misread(items) == []

    # A member back after being seen dead has its copies checked: the damaged ones are
    # dropped, and every message is made whole again (the reads above found some already).
    # A restart quicker than --dead-after goes unnoticed: its damage is found when read or
    # scrubbed.
    cluster.members[victim].kill()
    wait_for(lambda: victim not in cluster.alive_members(), 10, "the member to be seen dead")
    cluster.members[victim].start()
    wait_for(lambda: whole(cluster, items, tolerance=2), 30, "three good copies of every message")
    broken = [
        path.name
        for path in cluster.messages_dir(victim).glob("*.msg")
        if path.read_bytes() != items[path.stem].encode()
    ]
    assert broken == []
    assert cluster.misread(items) == []


@pytest.mark.cluster
def test_the_scrub_finds_damage_on_copies_nobody_reads(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2, extra=("--scrub-every", "1"))
    items = {f"s{n}": f"value {n}" for n in range(40)}
    assert cluster.set_many(items) == [b"OK"] * 40
    member = cluster.member_ports[0]
    damaged = sorted(cluster.messages_dir(member).glob("*.msg"))[:5]
    for path in damaged:
        path.write_bytes(b"rot")

    wait_for(lambda: whole(cluster, items, tolerance=1), 30, "the scrub to repair the damage")
    rotten = [p for p in cluster.messages_dir(member).glob("*.msg") if p.read_bytes() == b"rot"]
    assert rotten == []  # damaged copies are removed, not left behind
