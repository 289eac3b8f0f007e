"""Starting and stopping nodes as a user does: flags, tolerance.conf, the course's no-flag
mode, `kayit cluster` and `kayit client`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from kayit.client import KayitClient
from kayit.protocol import ErrorCode, error_code
from kayit.rpc.status import fetch_status
from kayit.server.ports import free_ports, port_is_free
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN, NODE_KEY
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import NodeProcess, free_port_run, wait_for

KAYIT = [sys.executable, "-m", "kayit"]
FAST = ["--heartbeat", "0.2", "--dead-after", "1"]


def _leader(workdir: Path, *extra: str) -> tuple[NodeProcess, int, int]:
    grpc_port, client_port = free_ports(2)
    args = ["--leader", "--grpc-port", str(grpc_port), "--client-port", str(client_port)]
    node = NodeProcess("leader", grpc_port, [*args, *FAST, *extra], workdir)
    return node, grpc_port, client_port


@pytest.mark.cluster
@pytest.mark.parametrize("line", ["TOLERANCE=3", "tolerance = 4", "5"])
def test_tolerance_comes_from_tolerance_conf(tmp_path: Path, line: str) -> None:
    (tmp_path / "tolerance.conf").write_text(line + "\n")
    node, grpc_port, _ = _leader(tmp_path)
    node.start()
    try:
        wait_for(lambda: _answers(grpc_port), 20, "the leader")
        # The cluster is formed with it a moment after the node answers; it stays fixed.
        wanted = int(line.split("=")[-1])
        status = partial(fetch_status, f"127.0.0.1:{grpc_port}")
        wait_for(lambda: status().role == "leader" and status().tolerance == wanted, 10, "formed")
    finally:
        node.kill()


@pytest.mark.cluster
@pytest.mark.parametrize("line", ["TOLERANCE=two", "TOLERANCE=2\nTOLERANCE=3", "-1"])
def test_bad_tolerance_conf_is_a_clear_startup_error(tmp_path: Path, line: str) -> None:
    (tmp_path / "tolerance.conf").write_text(line + "\n")
    grpc_port, client_port = free_ports(2)
    result = subprocess.run(
        [*KAYIT, "node", "--leader", "--grpc-port", str(grpc_port), "--client-port",
         str(client_port)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "tolerance.conf" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.cluster
def test_sigterm_stops_a_node_cleanly_and_its_data_stays(tmp_path: Path) -> None:
    node, grpc_port, client_port = _leader(tmp_path, "--tolerance", "0")
    node.start()
    try:
        wait_for(lambda: _answers(grpc_port), 20, "the leader")
        with KayitClient("127.0.0.1", client_port) as client:
            assert client.set("7", "seven") == b"OK"
        assert node.stop() == 0
        node.start()
        wait_for(lambda: _answers(grpc_port), 20, "the restarted leader")
        with KayitClient("127.0.0.1", client_port) as client:
            assert client.get("7") == b"seven"
        # Promoted from pending once the restarted node applied its log again, if not before.
        copy = tmp_path / "data" / f"node-{grpc_port}" / "messages" / "7.msg"
        wait_for(copy.exists, 10, "the copy in messages/")
        assert copy.read_bytes() == b"seven"
    finally:
        node.kill()


@pytest.mark.cluster
def test_a_member_started_before_its_leader_waits_and_joins(tmp_path: Path) -> None:
    leader, grpc_port, client_port = _leader(tmp_path, "--tolerance", "1")
    (member_port,) = free_ports(1)
    member = NodeProcess(
        "member",
        member_port,
        ["--join", f"127.0.0.1:{grpc_port}", "--grpc-port", str(member_port), *FAST],
        tmp_path,
    )
    member.start()
    try:
        wait_for(lambda: _answers(member_port), 20, "the member")
        leader.start()
        wait_for(lambda: _alive_members(grpc_port) == 1, 20, "the member to join")
        with KayitClient("127.0.0.1", client_port) as client:
            assert client.set("a", "b") == b"OK"
    finally:
        member.kill()
        leader.kill()


def _leader_sees(nodes: int) -> bool:
    """Whether the node that leads now counts ``nodes`` alive, itself included."""
    for port in (5555, 5556, 5557):
        try:
            status = fetch_status(f"127.0.0.1:{port}", timeout=1)
        except ConnectionError:
            continue
        if status.role == "leader":
            return 1 + sum(m.alive for m in status.members) == nodes
    return False


@pytest.mark.cluster
@pytest.mark.host_wide
def test_course_mode_without_flags_picks_ports_from_5555(tmp_path: Path) -> None:
    needed = [5555, 5556, 5557, 6666, 6667, 6668]
    if not all(port_is_free("127.0.0.1", port) for port in needed):
        pytest.skip("ports 5555-5557 and 6666-6668 are taken on this machine")
    (tmp_path / "tolerance.conf").write_text("TOLERANCE=2\n")
    nodes = [NodeProcess(f"node{n}", 0, FAST, tmp_path) for n in range(3)]
    try:
        nodes[0].start()
        wait_for(lambda: _answers(5555), 20, "the first node on 5555")
        for joined, node in enumerate(nodes[1:], start=1):
            node.start()
            wait_for(partial(_has_members, 5555, joined), 20, "the member")
        status = fetch_status("127.0.0.1:5555")
        assert status.role == "leader"
        assert sorted(m.address for m in status.members) == ["127.0.0.1:5556", "127.0.0.1:5557"]
        with KayitClient("127.0.0.1", 6666) as client:
            assert client.set("1", "course") == b"OK"
            assert client.get("1") == b"course"
        copies = [tmp_path / "data" / f"node-{port}" / "messages" / "1.msg" for port in needed[:3]]
        wait_for(lambda: all(copy.exists() for copy in copies), 10, "3 promoted copies")
        # Each node has client port gRPC + 1111 of its own, and they all share 6666.
        with KayitClient("127.0.0.1", 6668) as client:
            assert client.set("2", "via 5557") == b"OK"
        with KayitClient("127.0.0.1", 6667) as client:
            assert client.get("2") == b"via 5557"
        nodes[0].kill()  # the leader: the other two elect one of them, and serve 6666
        with KayitClient("127.0.0.1", 6666, timeout=15) as client:
            assert client.get("1") == b"course"
            # Two live nodes cannot hold the three copies TOLERANCE=2 asks for.
            assert error_code(client.set("3", "x")) is ErrorCode.NOREPLICAS
        nodes[0].start()  # the same command: it finds its cluster and follows the new leader
        wait_for(lambda: _leader_sees(3), 20, "the first node back in the cluster")
        with KayitClient("127.0.0.1", 6666, timeout=15) as client:
            assert client.set("3", "back") == b"OK"
    finally:
        for node in nodes:
            node.kill()


@pytest.mark.cluster
def test_kayit_cluster_starts_every_node_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    base = free_port_run(8)
    client_port = base + 4  # and the 3 after it, one per member
    process = subprocess.Popen(
        [*KAYIT, "cluster", "--members", "3", "--tolerance", "2", "--grpc-port", str(base),
         "--client-port", str(client_port), "--data-dir", str(tmp_path / "d"),
         "--report-every", "0.5"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Its nodes speak mutual TLS, with certificates it made in DATA_DIR/tls.
        tls_dir = tmp_path / "d" / "tls"
        wait_for(lambda: (tls_dir / ADMIN / NODE_KEY).exists(), 10, "the certificates")
        admin = TlsIdentity.load(tls_dir, ADMIN)
        wait_for(lambda: _alive_members(base, admin) == 3, 30, "three live members")
        assert _alive_members(base) == -1, "plain gRPC must be refused"
        status = subprocess.run(
            [*KAYIT, "status", f"127.0.0.1:{base}", "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0 and "3 of 3 other nodes alive" in status.stdout, status
        with KayitClient("127.0.0.1", client_port) as client:
            assert client.set("hello", "world") == b"OK"
            assert client.get("hello") == b"world"
        with KayitClient("127.0.0.1", client_port + 3) as client:
            assert client.get("hello") == b"world"
        wait_for(lambda: (tmp_path / "d" / f"node-{base + 3}").is_dir(), 5, "data dirs")
        time.sleep(1.5)  # three report periods, so the leader's report shows the message
        os.kill(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # failed before its SIGTERM: it stops its nodes on one
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    text = output.decode()
    assert process.returncode == 0
    assert f"clients connect to 127.0.0.1:{client_port}" in text
    assert f"member:{base + 2} -> {client_port + 2}" in text
    assert "all nodes stopped" in text
    assert "1 messages (1 on own disk), TOLERANCE=2, 3 of 3 other nodes alive" in text
    for port in range(base, base + 8):
        assert port_is_free("127.0.0.1", port), f"port {port} still in use"


@pytest.mark.cluster
def test_kayit_cluster_stopped_while_its_nodes_start_stops_them_all(tmp_path: Path) -> None:
    base = free_port_run(6)
    process = subprocess.Popen(
        [*KAYIT, "cluster", "--members", "2", "--grpc-port", str(base),
         "--client-port", str(base + 3), "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the banner: its nodes are starting
        assert first.startswith(b"kayit cluster:"), first
        process.terminate()
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert b"all nodes stopped" in output
    assert b"cluster ready" not in output
    ports = range(base, base + 6)
    wait_for(lambda: all(port_is_free("127.0.0.1", p) for p in ports), 10, "every port free")


@pytest.mark.cluster
def test_kayit_client_in_a_pipe(tmp_path: Path) -> None:
    node, grpc_port, client_port = _leader(tmp_path, "--tolerance", "0")
    node.start()
    try:
        wait_for(lambda: _answers(grpc_port), 20, "the leader")
        result = subprocess.run(
            [*KAYIT, "client", f"127.0.0.1:{client_port}"],
            input="SET 1 a b\nGET 1\nGET 2\nBAD\n", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        node.kill()
    assert result.returncode == 0
    assert result.stdout.splitlines()[:3] == ["OK", "a b", "NOT_FOUND"]
    assert result.stdout.splitlines()[3].startswith("ERROR BADREQUEST ")


@pytest.mark.cluster
def test_kayit_client_moves_on_to_the_next_address(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=0, members=1)
    (dead,) = free_ports(1)
    (member,) = cluster.members.values()
    client = subprocess.Popen(
        [*KAYIT, "client", f"127.0.0.1:{dead},127.0.0.1:{member.client_port}",
         f"127.0.0.1:{cluster.client_port}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write("SET 1 through the member\n")
        client.stdin.flush()
        assert client.stdout.readline() == "OK\n"
        member.kill()
        client.stdin.write("GET 1\nGET 1\n")  # the first one's reply is lost with the member
        client.stdin.close()
        assert client.stdout.readline() == "through the member\n"
        assert client.wait(timeout=30) == 0
        assert client.stderr is not None
        errors = client.stderr.read()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert f"connection to 127.0.0.1:{member.client_port} lost" in errors
    assert f"connected to 127.0.0.1:{cluster.client_port}" in errors


def _answers(grpc_port: int) -> bool:
    try:
        fetch_status(f"127.0.0.1:{grpc_port}", timeout=1)
    except ConnectionError:
        return False
    return True


def _alive_members(grpc_port: int, tls: TlsIdentity | None = None) -> int:
    try:
        status = fetch_status(f"127.0.0.1:{grpc_port}", timeout=1, tls=tls)
    except ConnectionError:
        return -1
    return sum(1 for m in status.members if m.alive)


def _has_members(grpc_port: int, count: int) -> bool:
    """Whether the node at ``grpc_port`` leads ``count`` other live nodes, every one voting."""
    try:
        status = fetch_status(f"127.0.0.1:{grpc_port}", timeout=1)
    except ConnectionError:
        return False
    members = status.members
    return sum(m.alive for m in members) == count and all(m.voter for m in members)


@pytest.mark.cluster
def test_a_new_node_with_nobody_to_ask_exits_2_saying_what_to_give(tmp_path: Path) -> None:
    grpc_port, client_port = free_ports(2)
    result = subprocess.run(
        [*KAYIT, "node", "--grpc-port", str(grpc_port), "--client-port", str(client_port),
         "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "give --join HOST:PORT to join a cluster, or --leader to form a new one" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "d" / f"node-{grpc_port}" / "raft" / "cluster").exists()
