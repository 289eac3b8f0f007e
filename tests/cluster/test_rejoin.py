"""A node restarted with its own command line finds its cluster, whatever happened to its own
node dir: the data dir's cluster record (cluster.json) names the cluster and its nodes, so a
node that lost its state joins again under a new id and never forms a second cluster; a node
whose Raft state is damaged sets it aside and does the same by itself."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from kayit.client import KayitClient
from kayit.cluster.record import ClusterRecord, read_record
from kayit.protocol import ErrorCode, error_code
from kayit.rpc.status import fetch_status
from kayit.server.ports import free_ports
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import HEARTBEAT, Cluster, NodeProcess, wait_for

# A reply may sit behind an election and a LEADER_WAIT (5 s).
_REPLY_TIMEOUT = 30.0


def _client_port(node: NodeProcess) -> int:
    assert node.client_port is not None
    return node.client_port


def _read_through(node: NodeProcess, ids: Iterable[str]) -> dict[str, bytes]:
    ids = list(ids)
    with KayitClient("127.0.0.1", _client_port(node), timeout=_REPLY_TIMEOUT) as client:
        replies = client.pipeline([f"GET {key}".encode() for key in ids])
    return dict(zip(ids, replies, strict=True))


def _misread_through(node: NodeProcess, expected: Mapping[str, str]) -> dict[str, bytes]:
    replies = _read_through(node, expected)
    return {key: reply for key, reply in replies.items() if reply != expected[key].encode()}


def _set_through(node: NodeProcess, items: Mapping[str, str]) -> list[bytes]:
    with KayitClient("127.0.0.1", _client_port(node), timeout=_REPLY_TIMEOUT) as client:
        return client.pipeline([f"SET {key} {value}".encode() for key, value in items.items()])


def _node_id(node: NodeProcess) -> str:
    status = node.own_status()
    assert status is not None, f"{node.name} does not answer"
    return status.node_id


def _role(node: NodeProcess) -> str | None:
    status = node.own_status()
    return None if status is None else status.role


def _wait_record(cluster: Cluster) -> ClusterRecord:
    """Until the data dir's record names every node of the cluster."""
    everyone = {f"127.0.0.1:{node.grpc_port}" for node in cluster.nodes}
    wait_for(
        lambda: (
            (found := read_record(cluster.data_dir)) is not None and set(found.nodes) == everyone
        ),
        10,
        "the cluster record to name every node",
    )
    record = read_record(cluster.data_dir)
    assert record is not None
    return record


def _wait_back_under_a_new_id(cluster: Cluster, node: NodeProcess, old_id: str) -> str:
    """Until ``node`` is a live voter under an id other than ``old_id``, which the cluster
    removed; returns the new id."""
    found: list[str] = []

    def back() -> bool:
        status = node.own_status()
        if status is None or status.role == "joining" or status.node_id == old_id:
            return False
        try:
            leading = cluster.status()
        except ConnectionError:
            return False
        voters = {m.node_id for m in leading.members if m.alive and m.voter} | {leading.node_id}
        known = {m.node_id for m in leading.members} | {leading.node_id}
        found.append(status.node_id)
        return status.node_id in voters and old_id not in known and old_id in leading.removed

    wait_for(back, 30, f"{node.name} to be back under a new id, voting, its old id removed")
    return found[-1]


def _since(node: NodeProcess, offset: int) -> str:
    return node.log()[offset:]


def _holding(start_cluster: ClusterFactory, count: int) -> tuple[Cluster, dict[str, str]]:
    cluster = start_cluster(tolerance=1, members=2)
    expected = {f"k{n}": f"value {n}" for n in range(count)}
    assert cluster.set_many(expected, chunk=100) == [b"OK"] * count
    return cluster, expected


@pytest.mark.cluster
def test_the_founder_restarted_without_its_node_dir_joins_its_cluster_again(
    start_cluster: ClusterFactory,
) -> None:
    cluster, expected = _holding(start_cluster, 200)
    founder = cluster.leader
    record = _wait_record(cluster)
    cluster_id = cluster.cluster_id(founder.grpc_port)
    assert record.cluster_id == cluster_id
    old_id = _node_id(founder)
    before = {port: cluster.message_files(port) for port in cluster.member_ports}
    copies = sum(len(files) for files in before.values())

    founder.kill()
    shutil.rmtree(cluster.node_dir(founder.grpc_port))
    offset = len(founder.log())
    founder.start()  # the same command line: --leader
    new_id = _wait_back_under_a_new_id(cluster, founder, old_id)

    text = _since(founder, offset)
    assert "forming cluster" not in text
    assert f"this node belongs to cluster {cluster_id}" in text
    assert "to form a new cluster instead, start it with an empty --data-dir" in text
    assert cluster.cluster_id(founder.grpc_port) == cluster_id
    assert new_id != old_id
    for node in cluster.nodes:
        assert _misread_through(node, expected) == {}, node.name
    # The members kept every copy they had: none was taken for a stale one.
    after = {port: cluster.message_files(port) for port in cluster.member_ports}
    for port in cluster.member_ports:
        assert after[port] >= before[port], f"the node on {port} deleted a copy"
    assert sum(len(files) for files in after.values()) >= copies
    assert _set_through(founder, {"k0": "after the rejoin"}) == [b"OK"]
    for node in cluster.nodes:
        assert _read_through(node, ["k0"]) == {"k0": b"after the rejoin"}, node.name


@pytest.mark.cluster
def test_a_new_node_of_the_data_dir_says_it_joins_not_that_it_lost_its_state(
    start_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = start_cluster(tolerance=1, members=1)
    cluster_id = cluster.cluster_id(cluster.leader.grpc_port)
    _wait_record(cluster)
    grpc_port, client_port = free_ports(2)
    newcomer = NodeProcess(
        "newcomer",
        grpc_port,
        ["--join", cluster.leader.address, "--grpc-port", str(grpc_port),
         "--client-port", str(client_port), "--data-dir", str(cluster.data_dir),
         "--heartbeat", str(HEARTBEAT), "--metrics-port", "0"],
        tmp_path,
        client_port,
    )  # fmt: skip
    newcomer.start()
    try:
        wait_for(lambda: f"joined cluster {cluster_id}" in newcomer.log(), 20, "the join")
        text = newcomer.log()
        assert f"joining cluster {cluster_id} (named in " in text
        assert "as a new node" not in text and "to form a new cluster instead" not in text
    finally:
        newcomer.kill()


@pytest.mark.cluster
def test_a_founder_without_its_node_dir_waits_for_its_cluster_instead_of_forming_one(
    start_cluster: ClusterFactory,
) -> None:
    cluster, expected = _holding(start_cluster, 100)
    founder = cluster.leader
    record = _wait_record(cluster)
    old_id = _node_id(founder)

    for node in cluster.nodes:
        node.kill()
    shutil.rmtree(cluster.node_dir(founder.grpc_port))
    offset = len(founder.log())
    founder.start()  # first, alone, with --leader
    wait_for(
        lambda: "this node belongs to cluster" in _since(founder, offset),
        20,
        "the founder to say which cluster it belongs to",
    )
    # Nobody answers: it keeps asking, forms nothing, and a SET finds no leader.
    (reply,) = _set_through(founder, {"alone": "x"})
    assert error_code(reply) is ErrorCode.NOLEADER, reply
    status = founder.own_status()
    assert status is not None and status.role == "joining"
    assert "forming cluster" not in _since(founder, offset)
    assert read_record(cluster.data_dir) == record
    assert not (cluster.node_dir(founder.grpc_port) / "raft" / "cluster").exists()

    for member in cluster.members.values():
        member.start()
    _wait_back_under_a_new_id(cluster, founder, old_id)
    assert "forming cluster" not in _since(founder, offset)
    assert cluster.cluster_id(founder.grpc_port) == record.cluster_id
    for node in cluster.nodes:
        assert _misread_through(node, expected) == {}, node.name
    assert _read_through(founder, ["alone"]) == {"alone": b"NOT_FOUND"}


def _flip_a_byte_in_the_middle(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.cluster
def test_a_follower_with_a_damaged_raft_log_sets_it_aside_and_rejoins_as_a_new_node(
    start_cluster: ClusterFactory,
) -> None:
    """Moved here from test_failover, where the node stopped with exit code 2 and the test
    moved raft/ aside and restarted it with --join: the node now does that by itself. The
    entries from the damage on may be ones it acknowledged, so it may not vote with that log:
    it comes back under a new node id, as a learner until caught up, its old id removed."""
    cluster = start_cluster(tolerance=1, members=2)
    expected: dict[str, str] = {}
    for chunk in range(4):  # several Raft entries, so that the damage falls among them
        items = {f"id-{chunk}-{n}": f"value {chunk} {n}" for n in range(50)}
        assert cluster.set_many(items) == [b"OK"] * len(items)
        expected |= items
    leading = cluster.status()
    damaged, other = [
        node for node in cluster.nodes if f"127.0.0.1:{node.grpc_port}" != leading.address
    ]
    old_id = _node_id(damaged)

    damaged.kill()
    raft_dir = cluster.node_dir(damaged.grpc_port) / "raft"
    flipped = _flip_a_byte_in_the_middle(raft_dir / "log")
    offset = len(damaged.log())
    damaged.start()  # the same command line
    _wait_back_under_a_new_id(cluster, damaged, old_id)

    text = _since(damaged, offset)
    assert "raft/log is damaged" in text
    assert "moved raft aside to raft.damaged-" in text
    assert "Traceback" not in text
    (aside,) = cluster.node_dir(damaged.grpc_port).glob("raft.damaged-*")
    assert (aside / "log").read_bytes() == flipped  # kept as it was, for a post-mortem
    assert _misread_through(damaged, expected) == {}
    # With the other follower gone, an entry commits only once the new node holds the
    # leader's log up to it: so a SET acknowledged now proves it caught up and votes.
    other.kill()
    written = {"after-damage": "committed"}
    assert _set_through(damaged, written) == [b"OK"]
    assert _misread_through(damaged, expected | written) == {}


@pytest.mark.cluster
def test_a_node_with_a_damaged_raft_log_and_nobody_to_ask_stops_with_exit_2(
    start_cluster: ClusterFactory,
) -> None:
    # One node: the record names only itself, and it was given no --peers or --join.
    cluster = start_cluster(tolerance=0, members=0)
    assert cluster.set_many({f"k{n}": "v" for n in range(50)}, chunk=10) == [b"OK"] * 50
    _wait_record(cluster)
    node = cluster.leader
    node.kill()
    raft_dir = cluster.node_dir(node.grpc_port) / "raft"
    flipped = _flip_a_byte_in_the_middle(raft_dir / "log")
    offset = len(node.log())
    node.start()
    assert node.process is not None
    assert node.process.wait(timeout=30) == 2
    text = _since(node, offset)
    assert "raft/log is damaged" in text
    assert "move the raft directory aside and restart the node with --join" in text
    assert "Traceback" not in text
    assert (raft_dir / "log").read_bytes() == flipped  # left as it was
    assert list(cluster.node_dir(node.grpc_port).glob("raft.damaged-*")) == []


@pytest.mark.cluster
def test_an_admission_by_another_cluster_than_the_records_is_refused(
    start_cluster: ClusterFactory, tmp_path: Path
) -> None:
    ours = start_cluster(tolerance=0, members=0)
    record = _wait_record(ours)
    # Another cluster, in a data dir of its own.
    grpc_port, client_port, newcomer_port, newcomer_client = free_ports(4)
    fast = ["--heartbeat", str(HEARTBEAT), "--rpc-timeout", "2", "--report-every", "60"]
    theirs = NodeProcess(
        "theirs",
        grpc_port,
        ["--leader", "--grpc-port", str(grpc_port), "--client-port", str(client_port),
         "--tolerance", "0", "--data-dir", str(tmp_path / "theirs"), *fast],
        tmp_path,
    )  # fmt: skip
    # A new node of our data dir, pointed at their node by mistake while ours is down.
    newcomer = NodeProcess(
        "newcomer",
        newcomer_port,
        ["--peers", f"127.0.0.1:{grpc_port}", "--grpc-port", str(newcomer_port),
         "--client-port", str(newcomer_client), "--data-dir", str(ours.data_dir), *fast],
        tmp_path,
    )  # fmt: skip
    try:
        theirs.start()
        theirs.wait_ready()
        ours.leader.kill()
        newcomer.start()
        assert newcomer.process is not None
        assert newcomer.process.wait(timeout=30) == 2
        text = newcomer.log()
        assert f"says this node belongs to cluster {record.cluster_id}" in text
        assert "Traceback" not in text
        # Their cluster refused it before admitting it: no member, nothing to remove.
        status = fetch_status(f"127.0.0.1:{grpc_port}", timeout=2)
        assert list(status.members) == []
        assert list(status.removed) == []
        assert read_record(ours.data_dir) == record
    finally:
        theirs.kill()
        newcomer.kill()


@pytest.mark.cluster
def test_a_damaged_cluster_record_stops_the_node_naming_the_file(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=0, members=0)
    _wait_record(cluster)
    node = cluster.leader
    node.kill()
    path = cluster.data_dir / "cluster.json"
    path.write_bytes(b'{"format": 1, "cluster_id": ')
    offset = len(node.log())
    node.start()
    assert node.process is not None
    assert node.process.wait(timeout=30) == 2
    text = _since(node, offset)
    assert f"kayit node: {path} is damaged" in text
    assert "Traceback" not in text
    assert path.read_bytes() == b'{"format": 1, "cluster_id": '  # not silently replaced


@pytest.mark.cluster
def test_peers_that_only_wait_to_join_do_not_stop_the_leader_forming_the_cluster(
    tmp_path: Path,
) -> None:
    """Nodes started in any order with --peers of one another, as kayit cluster starts them:
    the member, up first, waits to join; the --leader node finds no peer in a cluster, forms
    one, and the member joins it."""
    first_port, first_client, second_port, second_client = free_ports(4)
    common = ["--heartbeat", str(HEARTBEAT), "--rpc-timeout", "2", "--report-every", "60",
              "--data-dir", str(tmp_path / "data"), "--tolerance", "1"]  # fmt: skip
    leader = NodeProcess(
        "leader",
        first_port,
        ["--leader", "--peers", f"127.0.0.1:{second_port}", "--grpc-port", str(first_port),
         "--client-port", str(first_client), *common],
        tmp_path,
        first_client,
    )  # fmt: skip
    member = NodeProcess(
        "member",
        second_port,
        ["--peers", f"127.0.0.1:{first_port}", "--grpc-port", str(second_port),
         "--client-port", str(second_client), *common],
        tmp_path,
        second_client,
    )  # fmt: skip
    try:
        member.start()
        wait_for(lambda: _role(member) == "joining", 20, "the member to wait to join")
        leader.start()
        wait_for(lambda: _role(member) == "member", 20, "the member to join")
        assert "forming cluster" in leader.log()
        assert "forming cluster" not in member.log()

        def member_alive() -> bool:
            status = leader.own_status()
            return status is not None and [m.alive for m in status.members] == [True]

        wait_for(member_alive, 20, "the leader to count the member alive")
        assert _set_through(member, {"k": "v"}) == [b"OK"]
        assert _read_through(leader, ["k"]) == {"k": b"v"}
    finally:
        leader.kill()
        member.kill()
