"""TLS on the client ports (--client-tls): kayit's own client and bench, redis-cli and redis-py
speak it, checking the node's certificate against the cluster's CA; a plain client is not
served."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from kayit.client import KayitClient
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN, CA_CERT
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster


@pytest.fixture
def cluster(start_cluster: ClusterFactory) -> Cluster:
    return start_cluster(tolerance=1, members=1, tls=True, extra=("--client-tls",))


def _tls_client(cluster: Cluster, port: int) -> KayitClient:
    admin = TlsIdentity.load(cluster.tls_dir, ADMIN)
    return KayitClient("127.0.0.1", port, tls=admin.client_context())


@pytest.mark.cluster
def test_kayit_clients_speak_tls_to_every_node_and_a_plain_one_is_not_served(
    cluster: Cluster,
) -> None:
    with _tls_client(cluster, cluster.client_port) as client:
        assert client.set("k", "over tls") == b"OK"
    member_port = cluster.members[cluster.member_ports[0]].client_port
    assert member_port is not None
    with _tls_client(cluster, member_port) as client:  # a follower forwards to the leader
        assert client.get("k") == b"over tls"
        assert client.set("k2", "through a follower") == b"OK"

    with pytest.raises(OSError), KayitClient("127.0.0.1", cluster.client_port, 5) as plain:
        plain.get("k")

    piped = subprocess.run(
        [sys.executable, "-m", "kayit", "client", f"127.0.0.1:{cluster.client_port}",
         "--tls-dir", str(cluster.tls_dir)],
        input="GET k2\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert piped.stdout == "through a follower\n", piped.stderr
    bench = subprocess.run(
        [sys.executable, "-m", "kayit", "bench", "-p", str(cluster.client_port), "-n", "200",
         "-c", "4", "--tls-dir", str(cluster.tls_dir), "--json", "--no-progress"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert '"errors": 0' in bench.stdout and '"requests": 200' in bench.stdout


@pytest.mark.cluster
def test_redis_py_with_ssl(cluster: Cluster) -> None:
    client = redis.Redis(
        port=cluster.client_port,
        protocol=2,
        ssl=True,
        ssl_ca_certs=str(cluster.tls_dir / CA_CERT),
        socket_timeout=10,
    )
    try:
        assert client.set("py", b"secret bytes") is True
        assert client.get("py") == b"secret bytes"
    finally:
        client.close()


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_with_tls(cluster: Cluster) -> None:
    def cli(*args: str) -> str:
        command = ["redis-cli", "-p", str(cluster.client_port), "--tls",
                   "--cacert", str(cluster.tls_dir / CA_CERT), *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()

    assert cli("SET", "cli", "via redis-cli --tls") == "OK"
    assert cli("GET", "cli") == "via redis-cli --tls"


@pytest.mark.cluster
def test_tls_clients_of_the_shared_port_are_passed_on_before_their_handshake(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(
        tolerance=1, members=2, tls=True, shared_client_port=True, extra=("--client-tls",)
    )
    clients = [_tls_client(cluster, cluster.client_port) for _ in range(12)]
    try:
        for n, client in enumerate(clients):  # the kernel spread them over the three nodes
            assert client.set(f"k{n}", f"v{n}") == b"OK"
        # The leader's process did every handshake and serves every one of them.
        for port in (m.client_port for m in cluster.members.values()):
            assert port is not None
            with redis.Redis(
                port=port, ssl=True, ssl_ca_certs=str(cluster.tls_dir / CA_CERT), socket_timeout=10
            ) as member:
                assert member.info("clients")["connected_clients"] == 1  # this one
        for n, client in enumerate(clients):
            assert client.get(f"k{n}") == f"v{n}".encode()
    finally:
        for client in clients:
            client.close()
