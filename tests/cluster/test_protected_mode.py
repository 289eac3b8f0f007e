"""Protected mode on a real network: a node in a network namespace of its own, on an address of
198.51.100.0/24, and a client reaching it from outside, over the test bridge: not loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kayit.chaos.network import Namespaces, NetworkError, check_namespaces_usable
from kayit.client import KayitClient
from kayit.tls.authority import init_authority, issue
from tests.cluster.harness import wait_for

CLIENT_PORT, GRPC_PORT = 6666, 5555  # the node has an address of its own: no clash
PASSWORD = "open sesame"


@pytest.fixture
def network() -> Iterator[Namespaces]:
    try:
        check_namespaces_usable()
        made = Namespaces(1)
    except NetworkError as error:
        pytest.skip(str(error))
    yield made
    made.close()


class Node:
    """A single leader inside the namespace, started with ``flags``. Its gRPC port speaks
    mutual TLS: a node refuses to serve it plainly beyond loopback."""

    def __init__(self, network: Namespaces, workdir: Path, *flags: str) -> None:
        self.host = network.host(0)
        self.log_path = workdir / "node.log"
        tls_dir = workdir / "tls"
        if not tls_dir.exists():
            init_authority(tls_dir)
            issue(tls_dir, "node", [self.host])
        argv = [
            sys.executable, "-m", "kayit", "node", "--leader", "--tolerance", "0",
            "--host", self.host, "--grpc-port", str(GRPC_PORT),
            "--client-port", str(CLIENT_PORT), "--data-dir", str(workdir / "data"),
            "--tls-dir", str(tls_dir), "--tls-name", "node", "--report-every", "60", *flags,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                network.wrap(0, argv), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self._listening, 20, "the node's client port")
        except BaseException:
            self.stop()
            raise

    def _listening(self) -> bool:
        try:
            socket.create_connection((self.host, CLIENT_PORT), timeout=0.5).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def first_line(host: str, request: bytes) -> bytes:
    with socket.create_connection((host, CLIENT_PORT), timeout=10) as raw:
        raw.sendall(request)
        received = b""
        while not received.endswith(b"\n") and (chunk := raw.recv(4096)):
            received += chunk
        return received


@pytest.mark.cluster
@pytest.mark.host_wide
def test_a_client_from_another_host_is_denied_until_a_password_is_set(
    network: Namespaces, tmp_path: Path
) -> None:
    node = Node(network, tmp_path)
    try:
        with socket.create_connection((node.host, CLIENT_PORT), timeout=10) as raw:
            received = b""
            while chunk := raw.recv(4096):  # one line, then the node closes
                received += chunk
        assert received.startswith(b"ERROR DENIED kayit is running in protected mode")
        assert received.count(b"\n") == 1
        assert b"--requirepass" in received and b"--insecure" in received
        log = node.log()
        assert "protected mode" in log  # said at start, and at the first refusal
        assert "refused a client from 198.51.100." in log
    finally:
        node.stop()

    node = Node(network, tmp_path, "--requirepass", PASSWORD)
    try:
        assert first_line(node.host, b"GET a\n") == b"ERROR NOAUTH Authentication required.\n"
        with KayitClient(node.host, CLIENT_PORT, password=PASSWORD) as client:
            assert client.set("a", "from afar") == b"OK"
            assert client.get("a") == b"from afar"
    finally:
        node.stop()


@pytest.mark.cluster
@pytest.mark.host_wide
def test_insecure_serves_other_hosts_without_a_password_and_says_so(
    network: Namespaces, tmp_path: Path
) -> None:
    node = Node(network, tmp_path, "--insecure")
    try:
        assert first_line(node.host, b"GET a\n") == b"NOT_FOUND\n"
        assert "served without authentication (--insecure)" in node.log()
    finally:
        node.stop()
