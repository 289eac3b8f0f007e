"""kayit.toml with real processes: a node takes its settings from it, and the nodes that
`kayit cluster` starts take theirs from the cluster's command line only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kayit.client import KayitClient
from kayit.rpc.status import fetch_status
from kayit.server.ports import free_ports
from tests.cluster.harness import NodeProcess, free_port_run, port_open, wait_for
from tests.cluster.test_client_limits import read_until_closed

KAYIT = [sys.executable, "-m", "kayit"]


@pytest.mark.cluster
def test_a_node_started_with_only_a_kayit_toml_uses_it(tmp_path: Path) -> None:
    grpc_port, client_port = free_ports(2)  # not the course's ports: only the file names them
    (tmp_path / "kayit.toml").write_text(
        "[node]\n"
        "leader = true\n"
        f"grpc-port = {grpc_port}\n"
        f"client-port = {client_port}\n"
        "data-dir = 'stored'\n"
        "tolerance = 0\n"
        "max-clients = 1\n"
        "report-every = 60\n"
    )
    (tmp_path / "tolerance.conf").write_text("TOLERANCE=3\n")  # kayit.toml's wins
    node = NodeProcess("node", grpc_port, [], tmp_path)
    node.start()
    try:
        wait_for(lambda: port_open(client_port), 20, "the client port kayit.toml names")
        client = KayitClient("127.0.0.1", client_port)
        # The probes of port_open may still count against max-clients = 1 for a moment.
        wait_for(lambda: _set_or_reconnect(client), 10, "a client slot")
        with client:
            assert client.get("1") == b"from the file"
            # max-clients = 1: a second connection at once is refused.
            with socket.create_connection(("127.0.0.1", client_port), timeout=10) as second:
                assert read_until_closed(second).startswith(b"ERROR LIMIT")
        assert fetch_status(f"127.0.0.1:{grpc_port}").tolerance == 0
        assert (tmp_path / "stored" / f"node-{grpc_port}").is_dir()
    finally:
        node.stop()


@pytest.mark.cluster
def test_kayit_cluster_nodes_get_settings_from_the_cluster_alone(tmp_path: Path) -> None:
    """The working directory's [node] table and the KAYIT_* variables of node-only flags do
    not reach the nodes `kayit cluster` starts: no password, no client limit; its own
    [cluster] table does."""
    grpc_port = free_port_run(4)
    client_port = grpc_port + 2  # and the member's after it
    (tmp_path / "kayit.toml").write_text(
        "[cluster]\n"
        "members = 1\n"
        "tolerance = 1\n"
        f"grpc-port = {grpc_port}\n"
        f"client-port = {client_port}\n"
        "no-tls = true\n"
        "[node]\n"
        "requirepass = 'only for nodes run by hand'\n"
    )
    environ = {**os.environ, "KAYIT_MAX_CLIENTS": "1"}
    cluster = subprocess.Popen(
        [*KAYIT, "cluster"], cwd=tmp_path, env=environ,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def member_listens() -> bool:
            assert cluster.poll() is None, "kayit cluster exited"
            return port_open(client_port + 1)

        wait_for(member_listens, 30, "the member's client port")
        wait_for(lambda: _members_alive(grpc_port) == 1, 30, "the member")
        with (
            KayitClient("127.0.0.1", client_port) as first,
            KayitClient("127.0.0.1", client_port + 1) as second,
            KayitClient("127.0.0.1", client_port + 1) as third,
        ):
            assert first.set("1", "no password asked") == b"OK"
            assert second.get("1") == b"no password asked"
            assert third.get("1") == b"no password asked"
    finally:
        cluster.terminate()
        output, _ = cluster.communicate(timeout=30)
        print(output.decode(errors="replace"))  # shown when the test fails
    assert cluster.returncode == 0, output


def _members_alive(grpc_port: int) -> int:
    try:
        status = fetch_status(f"127.0.0.1:{grpc_port}", timeout=1)
    except ConnectionError:
        return -1
    return sum(1 for member in status.members if member.alive)


def _set_or_reconnect(client: KayitClient) -> bool:
    reply = client.set("1", "from the file")
    if reply != b"OK":
        assert reply.startswith(b"ERROR LIMIT"), reply
        client.reconnect()
    return reply == b"OK"
