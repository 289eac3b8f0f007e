"""``kayit cluster``'s plan: the command line of each node."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from kayit.config import read_password_file
from kayit.local_cluster import (
    PASSWORD_FILE,
    ClusterError,
    ClusterPlan,
    check_ports,
    named_line,
    save_password,
)


def _plan(members: int, hosts: tuple[str, ...] = ()) -> ClusterPlan:
    return ClusterPlan(
        members=members,
        tolerance=1,
        client_port=7000,
        grpc_port=8000,
        data_dir=Path("d"),
        fsync="always",
        report_every=10.0,
        hosts=hosts,
    )


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_every_node_is_given_every_other_node_as_peers() -> None:
    commands = _plan(members=3).node_commands()
    assert [name for name, _ in commands] == [
        "leader:8000",
        "member:8001",
        "member:8002",
        "member:8003",
    ]
    everyone = {f"127.0.0.1:{8000 + n}" for n in range(4)}
    for n, (_, argv) in enumerate(commands):
        peers = _flag(argv, "--peers")
        assert peers is not None
        own = f"127.0.0.1:{8000 + n}"
        assert set(peers.split(",")) == everyone - {own}
        assert _flag(argv, "--grpc-port") == str(8000 + n)
        assert _flag(argv, "--client-port") == str(7000 + n)
        assert _flag(argv, "--shared-client-port") == "7000"
        assert _flag(argv, "--data-dir") == "d"
        # Only node 0 may form the cluster; the members only ever join it.
        assert ("--leader" in argv) == (n == 0)
        assert "--join" not in argv
    assert _flag(commands[0][1], "--tolerance") == "1"


def test_peers_carry_each_nodes_own_host() -> None:
    hosts = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    commands = _plan(members=2, hosts=hosts).node_commands()
    assert _flag(commands[1][1], "--peers") == "10.0.0.1:8000,10.0.0.3:8002"
    assert _flag(commands[1][1], "--host") == "10.0.0.2"


def test_a_lone_leader_has_no_peers() -> None:
    ((name, argv),) = _plan(members=0).node_commands()
    assert name == "leader:8000"
    assert "--leader" in argv
    assert "--peers" not in argv


def test_the_password_goes_to_every_node_by_file_and_never_on_a_command_line(
    tmp_path: Path,
) -> None:
    path = save_password(tmp_path / "data", b"s3cret")
    assert path == tmp_path / "data" / PASSWORD_FILE
    assert path.read_bytes() == b"s3cret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    save_password(tmp_path / "data", b"other")  # written again: its owner's only again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_password_file(path) == b"other"

    plan = replace(_plan(members=2), password_file=path, insecure=True)
    for _, argv in plan.node_commands():
        assert _flag(argv, "--requirepass-file") == str(path)
        assert "--insecure" in argv
        assert "other" not in " ".join(argv)
    for _, argv in _plan(members=1).node_commands():
        assert "--requirepass-file" not in argv and "--insecure" not in argv


def test_node_i_serves_metrics_on_the_metrics_port_plus_i() -> None:
    given = replace(_plan(members=2), metrics_port=9000).node_commands()
    assert [_flag(argv, "--metrics-port") for _, argv in given] == ["9000", "9001", "9002"]
    off = replace(_plan(members=1), metrics_port=0).node_commands()
    assert [_flag(argv, "--metrics-port") for _, argv in off] == ["0", "0"]
    # By default each node takes its own (its gRPC port + 2222), given up if taken.
    default = _plan(members=1)
    assert all("--metrics-port" not in argv for _, argv in default.node_commands())
    assert default.node_metrics_port(1) == 8001 + 2222


def test_the_plan_lists_every_port_its_nodes_listen_on() -> None:
    assert _plan(members=1).ports() == [
        ("127.0.0.1", 8000, "gRPC port of leader:8000"),
        ("127.0.0.1", 7000, "client port of leader:8000"),
        ("127.0.0.1", 8001, "gRPC port of member:8001"),
        ("127.0.0.1", 7001, "client port of member:8001"),
    ]
    # Metrics ports given are checked too; the default ones are given up when taken.
    given = replace(_plan(members=1), metrics_port=9000).ports()
    assert ("127.0.0.1", 9001, "metrics port of member:8001") in given


def test_ports_that_overlap_are_refused_before_anything_starts() -> None:
    plan = replace(_plan(members=3), client_port=8002)
    with pytest.raises(
        ClusterError,
        match=r"127\.0\.0\.1:8002 would be both client port of leader:8000 and gRPC port "
        r"of member:8002",
    ):
        check_ports(plan)


def test_log_flags_go_to_every_node_and_json_lines_stay_json() -> None:
    plan = replace(_plan(members=2), log_level="debug", log_format="json")
    for _, argv in plan.node_commands():
        assert (_flag(argv, "--log-level"), _flag(argv, "--log-format")) == ("debug", "json")
    entry = '{"time": "t", "level": "info", "logger": "kayit.report", "message": "m"}'
    assert json.loads(named_line("member:8001", entry)) == {
        "node": "member:8001",
        **json.loads(entry),
    }
    assert named_line("member:8001", "2026-11-27 INFO m") == "[member:8001] 2026-11-27 INFO m"
    assert named_line("leader:8000", "{not json") == "[leader:8000] {not json"
