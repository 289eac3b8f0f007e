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
    assert cluster.misread(items) == []

    # Those reads restored the leader's copies; a second member may now die too.
    cluster.members[second].kill()
    assert cluster.misread(items) == []


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
    assert cluster.misread(items) == []


@pytest.mark.cluster
def test_a_returning_member_has_its_surplus_copies_trimmed(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=3, extra=("--repair-after", str(REPAIR_AFTER)))
    items = {f"t{n}": f"value {n}" for n in range(150)}
    assert cluster.set_many(items) == [b"OK"] * 150
    returning = cluster.member_ports[0]
    others = cluster.member_ports[1:]
    assert cluster.count_on_disk(returning) == 50

    cluster.members[returning].kill()
    wait_for(lambda: sum(cluster.count_on_disk(p) for p in others) == 150, 30, "repair")
    cluster.members[returning].start()
    wait_for(lambda: cluster.count_on_disk(returning) == 0, 30, "the surplus copies to go")
    assert sorted(cluster.count_on_disk(p) for p in others) == [75, 75]
    assert cluster.misread(items) == []


@pytest.mark.cluster
def test_a_member_back_with_an_old_copy_never_serves_it(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    first, second = cluster.member_ports
    with cluster.client() as client:
        assert client.set("x", "old") == b"OK"
    stale = first if cluster.holders("x") == [first] else second
    fresh = second if stale == first else first
    cluster.members[stale].kill()
    with cluster.client() as client:
        assert client.set("x", "new") == b"OK"  # the dead holder is replaced
    assert cluster.holders("x") == sorted([stale, fresh]) or fresh in cluster.holders("x")

    cluster.members[stale].start()
    wait_for(lambda: not (cluster.messages_dir(stale) / "x.msg").exists(), 30, "the old copy to go")
    cluster.members[fresh].kill()
    (cluster.messages_dir(cluster.leader_port) / "x.msg").unlink()
    with cluster.client() as client:
        reply = client.get("x")
    assert reply != b"old"
    assert reply.startswith(b"ERROR UNAVAILABLE ")


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
    assert all((leader_copies / name).read_bytes() != b"garbage" for name in damaged[:4])

    # A restart makes the member list only its good copies; the rest are made again.
    cluster.members[victim].kill()
    cluster.members[victim].start()

    def whole() -> bool:
        for key, value in items.items():
            good = [
                p
                for p in cluster.holders(key)
                if (cluster.messages_dir(p) / f"{key}.msg").read_bytes() == value.encode()
            ]
            if len(good) < 2:
                return False
        return True

    wait_for(whole, 30, "two good member copies of every message")


@pytest.mark.cluster
def test_the_scrub_finds_damage_on_copies_nobody_reads(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2, extra=("--scrub-every", "1"))
    items = {f"s{n}": f"value {n}" for n in range(40)}
    assert cluster.set_many(items) == [b"OK"] * 40
    member = cluster.member_ports[0]
    damaged = sorted(cluster.messages_dir(member).glob("*.msg"))[:5]
    for path in damaged:
        path.write_bytes(b"rot")

    def healed() -> bool:
        for key, value in items.items():
            copies = [cluster.messages_dir(p) / f"{key}.msg" for p in cluster.holders(key)]
            if not any(c.exists() and c.read_bytes() == value.encode() for c in copies):
                return False
        return True

    wait_for(healed, 30, "the scrub to repair the damaged copies")
    assert "reconciled" in cluster.leader.log()
    rotten = [p for p in cluster.messages_dir(member).glob("*.msg") if p.read_bytes() == b"rot"]
    assert rotten == []  # damaged copies are removed, not left behind
