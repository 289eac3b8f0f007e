"""Redis clients on kayit's client port: RESP2 beside the text protocol."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import redis

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster


@pytest.fixture
def cluster(start_cluster: ClusterFactory) -> Cluster:
    return start_cluster(tolerance=1, members=2)


@pytest.mark.cluster
def test_redis_py_sets_and_gets(cluster: Cluster) -> None:
    client = redis.Redis(port=cluster.client_port, protocol=2)
    try:
        assert client.ping() is True
        assert client.set("key:000001234", b"hello \r\n world") is True
        assert client.get("key:000001234") == b"hello \r\n world"
        assert client.get("missing") is None
        assert client.dbsize() == 1
        assert client.info()["db0"]["keys"] == 1
        with pytest.raises(redis.ResponseError):
            client.set("k", "v", ex=10)
        with pytest.raises(redis.ResponseError):
            client.get("bad key")
        big = bytes(range(256)) * 4000
        assert client.set("big", big) is True
        assert client.get("big") == big
        pipe = client.pipeline(transaction=False)
        for n in range(100):
            pipe.set(f"p{n}", n)
            pipe.get(f"p{n}")
        assert pipe.execute() == [x for n in range(100) for x in (True, str(n).encode())]
    finally:
        client.close()
    replicas = [cluster.messages_dir(port) / "key%3A000001234.msg" for port in cluster.member_ports]
    assert sum(path.exists() for path in replicas) == 1


@pytest.mark.cluster
def test_resp3_is_refused_clearly(cluster: Cluster) -> None:
    client = redis.Redis(port=cluster.client_port, protocol=3)
    with pytest.raises(redis.ResponseError, match="RESP2 only"):
        client.ping()
    client.close()


@pytest.mark.cluster
def test_text_and_resp_share_a_connection_and_a_keyspace(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(b"SET 1 from text\n*2\r\n$3\r\nGET\r\n$1\r\n1\r\n*1\r\n$4\r\nPING\r\nGET 1\n")
        expected = b"OK\n$9\r\nfrom text\r\n+PONG\r\nfrom text\n"
        assert _receive(raw, len(expected)) == expected


@pytest.mark.cluster
def test_a_value_with_a_newline_is_refused_to_text_readers(cluster: Cluster) -> None:
    client = redis.Redis(port=cluster.client_port, protocol=2)
    try:
        client.set("multi", b"line one\nline two")
    finally:
        client.close()
    with cluster.client() as text:
        assert text.get("multi").startswith(b"ERROR BADREQUEST ")
        assert text.get("missing") == b"NOT_FOUND"


@pytest.mark.cluster
def test_broken_resp_gets_an_error_and_the_connection_closes(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.settimeout(10)
        raw.sendall(b"*1\r\n+PING\r\nGET 1\n")
        received = b""
        while chunk := raw.recv(1000):
            received += chunk
    assert received.startswith(b"-ERR Protocol error")
    assert received.count(b"\r\n") == 1
    with cluster.client() as client:
        assert client.set("still", "up") == b"OK"


@pytest.mark.cluster
def test_quit_answers_ok_and_closes(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.settimeout(10)
        raw.sendall(b"*1\r\n$4\r\nQUIT\r\nGET 1\n")
        received = b""
        while chunk := raw.recv(1000):
            received += chunk
    assert received == b"+OK\r\n"


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli(cluster: Cluster) -> None:
    def cli(*args: str) -> str:
        command = ["redis-cli", "-p", str(cluster.client_port), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()

    assert cli("PING") == "PONG"
    assert cli("SET", "cli:1", "via redis-cli") == "OK"
    assert cli("GET", "cli:1") == "via redis-cli"
    assert cli("DBSIZE") == "1"
    assert cli("GET", "cli:2") == ""


@pytest.mark.cluster
def test_cluster_errors_lead_with_their_code_and_request_errors_stay_err(
    start_cluster: ClusterFactory,
) -> None:
    # Two of three nodes keep a leader, but TOLERANCE=2 needs three holders.
    cluster = start_cluster(tolerance=2, members=2)
    cluster.members[cluster.member_ports[0]].kill()
    cluster.wait_alive(1)
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$3\r\na b\r\n")
        raw.settimeout(10)
        received = b""
        while received.count(b"\r\n") < 2 and (chunk := raw.recv(65536)):
            received += chunk
    refused, bad = received.split(b"\r\n")[:2]
    assert refused == b"-NOREPLICAS only 2 live nodes; TOLERANCE=2 needs 3", refused
    assert bad == b"-ERR id must not contain whitespace"


def _receive(raw: socket.socket, size: int) -> bytes:
    raw.settimeout(10)
    received = b""
    while len(received) < size:
        chunk = raw.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


@pytest.mark.cluster
def test_hello_2_describes_the_server(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n")
        reply = _receive(raw, 8)
    assert reply.startswith(b"*8\r\n$6\r\nserver\r\n$5\r\nkayit\r\n")
