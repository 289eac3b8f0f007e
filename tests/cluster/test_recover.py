"""``kayit recover`` as an operator uses it: a cluster that lost a majority of its voters for
good answers NOLEADER to everything until it is rebuilt from its survivors; then every
acknowledged id that a survivor holds reads back, the lost nodes are removed, and new nodes
that join bring it back to TOLERANCE + 1 copies. A cluster that can still elect leaders, and
an address that does not answer, are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kayit.client import KayitClient
from kayit.rpc.status import fetch_status
from kayit.server.ports import free_ports
from kayit.storage.naming import file_name
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import DEAD_AFTER, HEARTBEAT, Cluster, NodeProcess, wait_for


def _recover(workdir: Path, *addresses: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kayit", "recover", ",".join(addresses)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ask(node: NodeProcess, lines: list[str]) -> list[bytes]:
    assert node.client_port is not None
    with KayitClient("127.0.0.1", node.client_port) as client:
        return client.pipeline([line.encode() for line in lines])


def _misread(node: NodeProcess, expected: dict[str, str]) -> list[str]:
    """The ids whose GET through ``node`` does not answer the expected value."""
    replies = _ask(node, [f"GET {key}" for key in expected])
    return [
        key
        for (key, value), reply in zip(expected.items(), replies, strict=True)
        if reply != value.encode()
    ]


def _knows_no_leader(node: NodeProcess) -> bool:
    return fetch_status(node.address, timeout=1).leader_address == ""


def _new_node(cluster: Cluster, name: str, join: str) -> NodeProcess:
    """A node with an empty data dir of its own, joining through ``join``."""
    grpc_port, client_port = free_ports(2)
    node = NodeProcess(
        name,
        grpc_port,
        ["--join", join, "--grpc-port", str(grpc_port), "--client-port", str(client_port),
         "--data-dir", str(cluster.workdir / f"data-{name}"), "--heartbeat", str(HEARTBEAT),
         "--dead-after", str(DEAD_AFTER), "--rpc-timeout", "2", "--report-every", "60",
         "--cache-mb", "0"],
        cluster.workdir,
        client_port,
    )  # fmt: skip
    node.start()
    return node


def _copy_on(node: NodeProcess, key: str) -> bytes | None:
    """The committed copy of ``key`` on a node that ``_new_node`` started."""
    path = node.workdir / f"data-{node.name}" / f"node-{node.grpc_port}" / "messages"
    path /= file_name(key)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@pytest.mark.cluster
def test_the_survivor_of_three_is_recovered_and_new_nodes_bring_back_every_copy(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=2)  # every node holds every copy
    expected = {f"k{n}": f"first {n}" for n in range(300)}
    assert cluster.set_many(expected) == [b"OK"] * len(expected)
    overwritten = {f"k{n}": f"second {n}" for n in range(0, 300, 3)}
    assert cluster.set_many(overwritten) == [b"OK"] * len(overwritten)
    expected |= overwritten

    # A cluster with a leader, and an address where nothing answers, are refused.
    healthy = _recover(cluster.workdir, cluster.leader.address)
    assert healthy.returncode == 1 and "knows of a leader" in healthy.stderr, healthy.stderr
    (nobody,) = free_ports(1)
    unreachable = _recover(cluster.workdir, f"127.0.0.1:{nobody}")
    assert unreachable.returncode == 1 and "no answer" in unreachable.stderr
    assert cluster.status().address == cluster.leader.address  # nothing changed

    survivor, lost = cluster.followers()[0], [cluster.leader, cluster.followers()[1]]
    lost_ids = {fetch_status(node.address, timeout=1).node_id for node in lost}
    for node in lost:
        node.kill()
    # Two of three voters gone: no leader, ever. (A command sent before the survivor noticed
    # may have been forwarded to the dead leader: its outcome is unknown, which says TIMEOUT.)
    replies = _ask(survivor, ["SET fresh value", "GET k1"])
    unknown_or_refused = (b"ERROR NOLEADER", b"ERROR TIMEOUT")
    assert all(reply.startswith(unknown_or_refused) for reply in replies), replies
    wait_for(lambda: _knows_no_leader(survivor), 10, "the survivor to know of no leader")

    done = _recover(cluster.workdir, survivor.address)
    assert done.returncode == 0, done.stderr
    survivor_id = fetch_status(survivor.address, timeout=1).node_id
    assert f"node {survivor_id} ({survivor.address}) leads in term" in done.stdout
    assert f"removed for good: {', '.join(sorted(lost_ids))}" in done.stdout

    status = fetch_status(survivor.address, timeout=1)
    assert status.role == "leader" and set(status.removed) == lost_ids
    assert list(status.members) == []
    report = subprocess.run(
        [sys.executable, "-m", "kayit", "status", survivor.address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert report.stdout.startswith(f"leader {survivor.address}"), report.stdout
    assert "0 of 0 other nodes alive" in report.stdout
    assert _misread(survivor, expected) == []
    # Alone, it cannot store TOLERANCE + 1 copies of a new write.
    (refused,) = _ask(survivor, ["SET fresh value"])
    assert refused.startswith(b"ERROR NOREPLICAS"), refused

    # Two new nodes join: writes find TOLERANCE + 1 holders again, and repair copies every
    # id onto both.
    newcomers = [_new_node(cluster, f"new-{n}", survivor.address) for n in (1, 2)]
    try:
        wait_for(
            lambda: sum(m.alive and m.voter for m in fetch_status(survivor.address).members) == 2,
            30,
            "both new nodes to vote",
        )
        later = {f"later{n}": f"later {n}" for n in range(50)}
        replies = _ask(survivor, [f"SET {key} {value}" for key, value in later.items()])
        assert replies == [b"OK"] * len(later)

        def copied() -> bool:
            return all(
                _copy_on(node, key) == value.encode()
                for node in newcomers
                for key, value in (expected | later).items()
            )

        wait_for(copied, 60, "every id's copy on both new nodes")
        assert _misread(survivor, expected | later) == []
    finally:
        for node in newcomers:
            node.kill()


@pytest.mark.cluster
def test_two_survivors_of_five_are_recovered_together_and_both_vote(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=4)
    expected = {f"k{n}": f"value {n}" for n in range(300)}
    assert cluster.set_many(expected) == [b"OK"] * len(expected)
    survivors = cluster.followers()[:2]
    lost = [node for node in cluster.nodes if node not in survivors]
    lost_ids = {fetch_status(node.address, timeout=1).node_id for node in lost}
    for node in lost:
        node.kill()
    # Each id is on three of the five nodes: those whose copies were all on the lost three
    # are gone with them.
    held = {key: value for key, value in expected.items() if cluster.copies(key)}
    assert held
    wait_for(
        lambda: all(_knows_no_leader(node) for node in survivors),
        10,
        "the survivors to know of no leader",
    )

    done = _recover(cluster.workdir, *(node.address for node in survivors))
    assert done.returncode == 0, done.stderr
    assert f"removed for good: {', '.join(sorted(lost_ids))}" in done.stdout

    status = cluster.status()
    assert status.address in {node.address for node in survivors}
    assert set(status.removed) == lost_ids
    (other,) = status.members
    assert other.address in {node.address for node in survivors}

    # The other survivor ran on: it follows the new leader, catches up and votes again.
    def other_votes() -> bool:
        (member,) = cluster.status().members
        return member.alive and member.voter

    wait_for(other_votes, 30, "the other survivor to vote again")
    assert all(node.running for node in survivors)
    for node in survivors:
        assert _misread(node, held) == []
    lost_keys = [key for key in expected if key not in held]
    for node in survivors:
        replies = _ask(node, [f"GET {key}" for key in lost_keys])
        assert all(reply.startswith(b"ERROR UNAVAILABLE") for reply in replies), replies[:3]
