"""Members that die, come back, or are too few: what the leader answers."""

from __future__ import annotations

import grpc
import pytest

from kayit.protocol.errors import ErrorCode, error_code
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.rpc.security import CLUSTER_METADATA
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import wait_for


@pytest.mark.cluster
def test_set_with_too_few_live_members_is_an_error_and_leaves_no_trace(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=1)
    with cluster.client() as client:
        reply = client.set("lonely", "should not stay")
        assert reply.startswith(b"ERROR NOREPLICAS "), reply
        assert client.get("lonely") == b"NOT_FOUND"
    assert cluster.count_on_disk(cluster.leader_port) == 0


@pytest.mark.cluster
def test_set_right_after_members_die_is_an_error_and_leaves_no_visible_trace(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=2)
    with cluster.client() as client:
        assert client.set("k", "first") == b"OK"
        cluster.members[cluster.member_ports[0]].kill()
        # The leader has not noticed yet: the SET finds out, and fails; nothing was done.
        failed = client.set("k", "second")
        assert error_code(failed) is ErrorCode.NOREPLICAS, failed
        assert client.set("new", "value").startswith(b"ERROR NOREPLICAS ")
        assert client.get("new") == b"NOT_FOUND"
        assert client.get("k") == b"first"


@pytest.mark.cluster
def test_a_member_failing_during_sets_is_replaced_by_another(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=3)
    victim = cluster.member_ports[0]
    cluster.members[victim].kill()
    items = {f"r{n}": f"v{n}" for n in range(300)}

    assert cluster.set_many(items, chunk=50) == [b"OK"] * 300

    assert cluster.count_on_disk(victim) == 0
    for k in items:
        assert len(cluster.holders(k)) == 1
    survivors = [p for p in cluster.member_ports if p != victim]
    assert sorted(cluster.count_on_disk(p) for p in survivors) == [150, 150]
    status = {m.address: m.alive for m in cluster.status().members}
    assert status[f"127.0.0.1:{victim}"] is False


@pytest.mark.cluster
def test_dead_member_is_skipped_then_used_again_when_it_returns(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=3)
    victim = cluster.member_ports[1]
    cluster.members[victim].kill()
    cluster.wait_alive(2)
    assert cluster.set_many({f"a{n}": "x" for n in range(20)}) == [b"OK"] * 20
    assert cluster.count_on_disk(victim) == 0

    cluster.members[victim].start()
    cluster.wait_alive(3)
    assert cluster.set_many({f"b{n}": "y" for n in range(30)}) == [b"OK"] * 30
    # Least-loaded placement sends the newcomer the new copies first.
    assert cluster.count_on_disk(victim) >= 20


@pytest.mark.cluster
def test_overwrite_stays_on_the_same_holders(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=2, members=4)
    with cluster.client() as client:
        assert client.set("same", "one") == b"OK"
        cluster.wait_promoted(["same"])
        holders = sorted(cluster.copies("same"))
        assert len(holders) == 3 and cluster.leader_port in holders  # the leader and T others
        for n in range(10):
            assert client.set(f"other{n}", "filler") == b"OK"
        assert client.set("same", "two") == b"OK"
        assert client.get("same") == b"two"
    cluster.wait_promoted(["same"])
    assert cluster.copies("same") == dict.fromkeys(holders, b"two")


@pytest.mark.cluster
def test_reads_go_to_a_live_holder_when_the_leaders_copy_is_gone(
    start_cluster: ClusterFactory,
) -> None:
    """Five nodes with T=2: three copies of each message, and a majority of the five left
    after two of them fail. A holder found without its copy (here the leader) is passed over
    and no longer counted as one; the leader does not put its copy back in place as it once
    did: repair makes the missing copies again on live nodes, whichever they are."""
    cluster = start_cluster(tolerance=2, members=4, extra=("--repair-after", "1"))
    with cluster.client() as client:
        assert client.set("gone", "from members") == b"OK"
        cluster.wait_promoted(["gone"])
        first, second = sorted(set(cluster.copies("gone")) - {cluster.leader_port})
        (cluster.messages_dir(cluster.leader_port) / "gone.msg").unlink()
        cluster.members[first].kill()
        assert client.get("gone") == b"from members"

        def three_live_copies() -> bool:
            return list(cluster.copies("gone").values()) == [b"from members"] * 3

        wait_for(three_live_copies, 10, "the lost copies to be made again on live nodes")
        cluster.members[second].kill()  # the other first holder: repair's copies are left
        assert client.get("gone") == b"from members"

        # No running node keeps a copy: the message cannot be read, and no other answer
        # (an older value, NOT_FOUND) is given for it.
        for port in cluster.copies("gone"):
            (cluster.messages_dir(port) / "gone.msg").unlink()
        reply = client.get("gone")
        assert reply.startswith(b"ERROR UNAVAILABLE "), reply
    wait_for(lambda: cluster.leader.running, 1, "the leader to stay up")


@pytest.mark.cluster
@pytest.mark.parametrize("bad_id", ["", "a b", "x" * 201])
def test_a_member_refuses_invalid_ids_over_grpc(start_cluster: ClusterFactory, bad_id: str) -> None:
    cluster = start_cluster(tolerance=1, members=1)
    member = cluster.member_ports[0]
    request = pb.StoredMessage(id=bad_id, payload=b"p", version=pb.Version(term=1, seq=1))
    # Sent as a node of the cluster would: with its id, else the call is refused before.
    metadata = ((CLUSTER_METADATA, cluster.cluster_id(member)),)
    with (
        grpc.insecure_channel(f"127.0.0.1:{member}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        NodeStub(channel).Store(request, timeout=5, metadata=metadata)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert list(cluster.messages_dir(member).iterdir()) == []
    assert cluster.members[member].running
