"""``kayit status`` as an operator runs it against a real cluster: the table, --json, and the
exit code (0 healthy, 1 degraded, 3 nothing answers)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kayit.server.ports import free_ports
from tests.cluster.harness import Cluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("status"), tolerance=1, members=2)
    try:
        yield cluster.start()
    finally:
        cluster.close()


def status(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kayit", "status", *args],
        capture_output=True, text=True, timeout=30, cwd=cwd,
    )  # fmt: skip


def status_json(*args: str) -> tuple[int, dict[str, Any]]:
    done = status("--json", *args)
    shown = json.loads(done.stdout)
    assert isinstance(shown, dict)
    return done.returncode, shown


@pytest.mark.cluster
def test_a_healthy_cluster_from_any_node(cluster: Cluster) -> None:
    assert cluster.client().set("k", "v") == b"OK"
    member = next(iter(cluster.members.values()))
    done = status(str(cluster.leader_port))  # PORT alone, as kayit client takes it
    assert done.returncode == 0, done.stderr
    head, columns, *rows = done.stdout.splitlines()
    assert head.startswith(f"leader {cluster.leader.address} (term ")
    assert head.endswith(", 2 of 2 other nodes alive, 0 under-replicated: healthy")
    assert columns.split() == ["ROLE", "NODE", "ADDRESS", "TERM", "ALIVE", "VOTER", "MESSAGES",
                               "ASSIGNED", "BACKLOG"]  # fmt: skip
    cells = [row.split() for row in rows]
    assert (cells[0][0], cells[0][2], cells[0][4], cells[0][5]) == (
        "leader", cluster.leader.address, "yes", "voter",
    )  # fmt: skip
    assert sorted((c[0], c[2], c[4], c[5]) for c in cells[1:]) == sorted(
        ("member", node.address, "yes", "voter") for node in cluster.members.values()
    )
    assert len({c[3] for c in cells}) == 1  # every node in the leader's term
    assert cells[0][6:8] == ["1", "-"]  # in the index; the leader assigns, is not assigned
    assert all(c[8].isdigit() for c in cells)  # every node answered with its backlog
    # Each copy is on TOLERANCE + 1 = 2 nodes: the leader and one member.
    assert sorted(c[7] for c in cells[1:]) == ["0", "1"]

    # Pointed at a member, it shows the same cluster, and --json the same data.
    code, shown = status_json(f":{member.grpc_port}")
    assert code == 0
    assert (shown["health"], shown["problems"], shown["asked"]) == ("healthy", [], member.address)
    assert (shown["leader"], shown["messages"], shown["under_replicated"]) == (
        cluster.leader.address, 1, 0,
    )  # fmt: skip
    assert [(n["role"], n["address"], n["alive"]) for n in shown["nodes"]] == [
        (c[0], c[2], True) for c in cells
    ]
    # What each node's backlog may hold: 10,000 until it has timed its file writes, then
    # about two seconds of them, never under 500.
    assert all(500 <= n["backlog_bound"] <= 10_000 for n in shown["nodes"]), shown["nodes"]


@pytest.mark.cluster
def test_nothing_listening_is_exit_3_in_one_line() -> None:
    (port,) = free_ports(1)
    done = status(f"127.0.0.1:{port}")
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.startswith(f"kayit status: no answer from 127.0.0.1:{port}: UNAVAILABLE")
    assert done.stderr.count("\n") == 1
    code, shown = status_json(str(port))
    assert (code, shown["health"]) == (3, "unreachable")


@pytest.mark.cluster
def test_a_bad_address_is_a_usage_error_in_one_line() -> None:
    done = status("127.0.0.1:notaport")
    assert done.returncode == 2
    assert done.stderr == (
        "kayit status: argument address: not a port number in '127.0.0.1:notaport' "
        "(see kayit status --help)\n"
    )


@pytest.mark.cluster
def test_a_killed_member_makes_it_degraded(cluster: Cluster) -> None:
    victim = next(iter(cluster.members.values()))
    victim.kill()
    wait_for(lambda: status(str(cluster.leader_port)).returncode == 1, 20, "degraded")
    done = status(str(cluster.leader_port))
    assert ", 1 of 2 other nodes alive," in done.stdout
    rows = [line.split() for line in done.stdout.splitlines()]
    (row,) = [cells for cells in rows if cells[2:3] == [victim.address]]
    # Its role as the leader knows it; what only the node could say is not known.
    assert [row[0], row[3], row[4], row[6]] == ["member", "-", "DEAD", "-"]
    assert f"degraded: node {row[1]} at {victim.address} is dead" in done.stdout.splitlines()
    code, shown = status_json(str(cluster.leader_port))
    assert (code, shown["health"]) == (1, "degraded")
    dead = [n for n in shown["nodes"] if not n["alive"]]
    assert [(n["address"], n["term"], n["messages"]) for n in dead] == [
        (victim.address, None, None)
    ]
