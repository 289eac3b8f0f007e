"""Redis clients on kayit's client port: RESP2 and RESP3 beside the text protocol, with
redis-py (each protocol, and its defaults) and redis-cli, on the leader and on a member that
forwards to it."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
import redis

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, resp

# redis-py's protocol argument: RESP2, RESP3, and its default (RESP3 in redis-py 8)
PROTOCOLS = [2, 3, None]
needs_redis_cli = pytest.mark.skipif(
    shutil.which("redis-cli") is None, reason="redis-cli is not installed"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("resp"), tolerance=1, members=2)
    try:
        yield started.start()
    finally:
        started.close()


def member_port(cluster: Cluster) -> int:
    """The client port of a member, which forwards to the leader."""
    port = cluster.followers()[0].client_port
    assert port is not None
    return port


def ports(cluster: Cluster) -> list[int]:
    return [cluster.client_port, member_port(cluster)]


def connect(port: int, protocol: int | None) -> redis.Redis:
    if protocol is None:
        return redis.Redis(port=port)
    return redis.Redis(port=port, protocol=protocol)


@pytest.mark.cluster
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_sets_and_gets(cluster: Cluster, protocol: int | None) -> None:
    key = f"key:{protocol}:000001234"
    for port in ports(cluster):
        client = connect(port, protocol)
        try:
            assert client.ping() is True
            assert client.set(key, b"hello \r\n world") is True
            assert client.get(key) == b"hello \r\n world"
            assert client.get("missing") is None
            with pytest.raises(redis.ResponseError):
                client.set("k", "v", ex=10)
            with pytest.raises(redis.ResponseError):
                client.get("bad key")
            big = bytes(range(256)) * 4000
            assert client.set(f"big:{protocol}", big) is True
            assert client.get(f"big:{protocol}") == big
            pipe = client.pipeline(transaction=False)
            for n in range(50):
                pipe.set(f"p{protocol}:{n}", n)
                pipe.get(f"p{protocol}:{n}")
            assert pipe.execute() == [x for n in range(50) for x in (True, str(n).encode())]
        finally:
            client.close()
    escaped = key.replace(":", "%3A")
    replicas = [cluster.messages_dir(port) / f"{escaped}.msg" for port in cluster.member_ports]
    assert sum(path.exists() for path in replicas) == 1


@pytest.mark.cluster
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reads_of_several_ids_and_of_the_keyspace(cluster: Cluster, protocol: int | None) -> None:
    prefix = f"ks{protocol}:"
    for port in ports(cluster):
        client = connect(port, protocol)
        try:
            assert client.set(f"{prefix}a", b"one") and client.set(f"{prefix}b", b"three")
            assert client.mget(f"{prefix}a", "missing", f"{prefix}b") == [b"one", None, b"three"]
            assert client.exists(f"{prefix}a", "missing", f"{prefix}a") == 2
            assert client.strlen(f"{prefix}b") == 5 and client.strlen("missing") == 0
            assert client.type(f"{prefix}a") in (b"string", "string")
            assert client.type("missing") in (b"none", "none")
            assert sorted(client.keys(f"{prefix}*")) == [
                f"{prefix}a".encode(),
                f"{prefix}b".encode(),
            ]
            scanned = list(client.scan_iter(match=f"{prefix}*", count=2))
            assert sorted(scanned) == [f"{prefix}a".encode(), f"{prefix}b".encode()]
            everything = set(client.keys())
            assert set(client.scan_iter(count=3)) == everything
            assert client.dbsize() == len(everything)
            assert client.info("keyspace")["db0"]["keys"] == len(everything)
            with pytest.raises(redis.ResponseError, match="invalid cursor"):
                client.scan(cursor=-1)
            cursor, page = client.scan(0, count=2**64 - 1)  # looks at 10,000 ids at most
            assert cursor == 0 and set(page) == everything
        finally:
            client.close()


@pytest.mark.cluster
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_transaction_is_refused_whole(cluster: Cluster, protocol: int | None) -> None:
    key = f"tx:{protocol}"
    client = connect(member_port(cluster), protocol)
    try:
        pipe = client.pipeline()  # transaction=True: MULTI ... EXEC
        pipe.set(key, "applied?")
        pipe.get(key)
        with pytest.raises(redis.ResponseError, match="MULTI is not supported"):
            pipe.execute()
        assert client.get(key) is None  # the SET inside was never carried out
        assert client.set(key, "after") is True  # EXEC ended the refusal
        assert client.get(key) == b"after"
    finally:
        client.close()


@pytest.mark.cluster
def test_every_command_after_multi_is_refused_until_exec_or_discard(cluster: Cluster) -> None:
    payload = (
        resp(b"MULTI") + resp(b"SET", b"tx:raw", b"v") + b"SET tx:raw text\n" + resp(b"EXEC")
        + resp(b"MULTI") + resp(b"DISCARD") + resp(b"EXEC") + resp(b"GET", b"tx:raw")
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(payload)
        replies = _receive_lines(raw, 8)
    assert replies[0].startswith(b"-ERR MULTI is not supported")
    assert replies[1].startswith(b"-ERR refused after MULTI")
    assert replies[2].startswith(b"ERROR BADREQUEST refused after MULTI")
    assert replies[3] == b"-EXECABORT Transaction discarded because of previous errors."
    assert replies[4].startswith(b"-ERR MULTI is not supported")
    assert replies[5:] == [b"+OK", b"-ERR EXEC without MULTI", b"$-1"]


@pytest.mark.cluster
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_and_command_answer_with_redis_reply_types(
    cluster: Cluster, protocol: int | None
) -> None:
    client = connect(cluster.client_port, protocol)
    other = connect(cluster.client_port, protocol)
    try:
        assert isinstance(client.client_id(), int)
        assert client.client_getname() is None
        assert client.client_setname("worker-1") is True
        assert client.client_getname() in (b"worker-1", "worker-1")
        with pytest.raises(redis.ResponseError, match="cannot contain spaces"):
            client.client_setname("two words")
        other.ping()
        listed = client.client_list()
        assert {entry["id"] for entry in listed} >= {
            str(client.client_id()),
            str(other.client_id()),
        }
        mine = next(e for e in listed if e["id"] == str(client.client_id()))
        assert mine["name"] == "worker-1" and mine["lib-name"] == "redis-py"
        assert mine["resp"] == str(protocol or 3)
        assert client.command_count() > 10
        assert client.config_get("maxmemory") == {}
    finally:
        client.close()
        other.close()


@pytest.mark.cluster
def test_info_has_redis_sections_with_real_numbers(cluster: Cluster) -> None:
    leader = redis.Redis(port=cluster.client_port, protocol=2)
    member = redis.Redis(port=member_port(cluster), protocol=3)
    try:
        leader.set("info:1", "x")
        everything = leader.info()
        assert everything["role"] == "master" and everything["connected_slaves"] == 2
        assert everything["connected_clients"] >= 1
        assert everything["used_memory"] > 1_000_000
        assert everything["total_commands_processed"] > 0
        assert everything["total_connections_received"] >= everything["connected_clients"]
        assert everything["loading"] == 0
        assert everything["db0"]["keys"] == leader.dbsize()
        assert set(leader.info("clients")) == {
            "connected_clients",
            "maxclients",
            "blocked_clients",
        }
        replica = member.info("replication")
        assert replica == {"role": "slave", "master_link_status": "up"}
        assert member.info("keyspace")["db0"]["keys"] == leader.dbsize()
    finally:
        leader.close()
        member.close()


@pytest.mark.cluster
def test_hello_switches_protocol_and_describes_the_server(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(resp(b"HELLO", b"2") + resp(b"GET", b"nope"))
        reply = _receive(raw, 1000)
        assert reply.startswith(b"*14\r\n$6\r\nserver\r\n$5\r\nkayit\r\n")
        assert reply.endswith(b"$-1\r\n")
        raw.sendall(resp(b"HELLO", b"3", b"SETNAME", b"three") + resp(b"GET", b"nope"))
        reply = _receive(raw, 1000)
        assert reply.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nkayit\r\n")
        assert b"$5\r\nproto\r\n:3\r\n" in reply and reply.endswith(b"_\r\n")
        raw.sendall(resp(b"CLIENT", b"GETNAME") + resp(b"HELLO", b"4"))
        assert _receive_lines(raw, 3) == [b"$5", b"three", b"-NOPROTO unsupported protocol version"]


@pytest.mark.cluster
def test_text_and_resp_share_a_connection_and_a_keyspace(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(b"SET 1 from text\n*2\r\n$3\r\nGET\r\n$1\r\n1\r\n*1\r\n$4\r\nPING\r\nGET 1\n")
        expected = b"OK\n$9\r\nfrom text\r\n+PONG\r\nfrom text\n"
        assert _receive(raw, len(expected)) == expected
        raw.sendall(b"EXISTS 1\nEXISTS never\nSTRLEN 1\nSTRLEN never\nEXISTS a b\n")
        assert _receive_lines(raw, 5) == [
            b"1",
            b"0",
            b"9",
            b"0",
            b"ERROR BADREQUEST EXISTS takes one id: EXISTS <id>",
        ]


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
@needs_redis_cli
def test_redis_cli(cluster: Cluster) -> None:
    port = str(member_port(cluster))

    def cli(*args: str) -> str:
        command = ["redis-cli", "-p", port, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()

    assert cli("PING") == "PONG"
    assert cli("SET", "cli:1", "via redis-cli") == "OK"
    assert cli("GET", "cli:1") == "via redis-cli"
    assert cli("GET", "cli:2") == ""
    assert cli("SET", "cli:22", "x" * 300) == "OK"
    count = int(cli("DBSIZE"))
    assert count >= 2
    assert sorted(cli("--scan", "--pattern", "cli:*").split()) == ["cli:1", "cli:22"]
    assert len(cli("--scan").split()) == count
    assert f"db0:keys={count}," in cli("INFO", "keyspace")
    bigkeys = cli("--bigkeys")
    assert f"Sampled {count} keys in the keyspace!" in bigkeys
    assert f"{count} strings with" in bigkeys


@pytest.mark.cluster
@needs_redis_cli
def test_redis_cli_stat(cluster: Cluster) -> None:
    command = ["stdbuf", "-oL", "redis-cli", "-p", str(cluster.client_port), "--stat", "-i", "0.1"]
    stat = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert stat.stdout is not None
        lines = [stat.stdout.readline() for _ in range(4)]
    finally:
        stat.kill()
        stat.wait()
    assert lines[1].split()[:5] == ["keys", "mem", "clients", "blocked", "requests"]
    for row in lines[2:]:
        keys, memory, clients, blocked = row.split()[:4]
        assert int(keys) >= 0 and memory.endswith("M") and int(clients) >= 1 and blocked == "0"


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
        refused, bad = _receive_lines(raw, 2)
    assert refused == b"-NOREPLICAS only 2 live nodes; TOLERANCE=2 needs 3", refused
    assert bad == b"-ERR id must not contain whitespace"
    for protocol in PROTOCOLS:
        client = connect(cluster.client_port, protocol)
        try:
            with pytest.raises(redis.ResponseError, match=r"^NOREPLICAS only 2 live nodes"):
                client.set("k", "v")
            assert client.exists("k") == 0
        finally:
            client.close()


def _receive(raw: socket.socket, size: int) -> bytes:
    """What arrives until ``size`` bytes have, or nothing more comes for a moment."""
    raw.settimeout(10)
    received = raw.recv(65536)
    raw.settimeout(0.3)
    while len(received) < size:
        try:
            chunk = raw.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        received += chunk
    return received


def _receive_lines(raw: socket.socket, count: int) -> list[bytes]:
    """``count`` reply lines, without their line ends."""
    raw.settimeout(10)
    received = b""
    while received.count(b"\n") < count and (chunk := raw.recv(65536)):
        received += chunk
    return [line.rstrip(b"\r") for line in received.split(b"\n")[:count]]
