"""Clients reach the leader through any node: members take clients on their own ports (and on
a port all nodes share) and forward every SET and GET to the leader over gRPC."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from kayit.client import KayitClient
from kayit.config import CLIENT_PORT_OFFSET
from kayit.protocol import ErrorCode, error_code
from kayit.server.forwarding import EXECUTE_DEADLINE, LEADER_WAIT
from kayit.server.ports import free_ports, port_is_free
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, NodeProcess, port_open, wait_for

KAYIT_NODE = [sys.executable, "-m", "kayit", "node"]


@pytest.fixture
def cluster(start_cluster: ClusterFactory) -> Cluster:
    return start_cluster(tolerance=1, members=2)


def member_ports(cluster: Cluster) -> list[int]:
    ports = [member.client_port for member in cluster.members.values()]
    assert all(port is not None for port in ports)
    return [port for port in ports if port is not None]


def exchange(port: int, payload: bytes, until: bytes) -> bytes:
    """Send ``payload`` in one write; read until the replies end with ``until`` (or the
    connection closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        raw.sendall(payload)
        received = b""
        while not received.endswith(until):
            chunk = raw.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


@pytest.mark.cluster
def test_a_set_through_a_member_reads_back_through_every_node(cluster: Cluster) -> None:
    first, second = member_ports(cluster)
    with cluster.client(first) as client:
        assert client.set("fwd", "through a member") == b"OK"
        assert client.get("fwd") == b"through a member"
    for port in (second, cluster.client_port):
        with cluster.client(port) as client:
            assert client.get("fwd") == b"through a member"
            assert client.get("never") == b"NOT_FOUND"
    # Stored as any SET: the leader's copy and TOLERANCE member copies.
    cluster.wait_promoted(["fwd"])
    leader_copy = cluster.messages_dir(cluster.leader_port) / "fwd.msg"
    assert leader_copy.read_bytes() == b"through a member"
    assert len(cluster.holders("fwd")) == 1


@pytest.mark.cluster
def test_500_pipelined_sets_through_a_member_are_answered_in_order(cluster: Cluster) -> None:
    first, second = member_ports(cluster)
    lines, expected = [], []
    for n in range(500):
        lines += [f"SET p{n % 100} round {n}".encode(), f"GET p{n % 100}".encode()]
        expected += [b"OK", f"round {n}".encode()]
    with cluster.client(first) as client:
        assert client.pipeline(lines) == expected
    with cluster.client(second) as client:
        replies = client.pipeline([f"GET p{n}".encode() for n in range(100)])
    assert replies == [f"round {400 + n}".encode() for n in range(100)]


@pytest.mark.cluster
def test_a_member_answers_every_protocol_exactly_as_the_leader(cluster: Cluster) -> None:
    with cluster.client() as client:
        assert client.set("same", "value") == b"OK"
    payload = (
        b"GET same\nGET nothing\nGET a b\nFOO 1\nSET x\n"
        b"*2\r\n$3\r\nGET\r\n$4\r\nsame\r\n*2\r\n$3\r\nGET\r\n$7\r\nnothing\r\n"
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n"
    )
    expected = (
        b"value\nNOT_FOUND\nERROR BADREQUEST GET takes one id: GET <id>\n"
        b"ERROR BADREQUEST unknown command 'FOO'; expected SET or GET\n"
        b"ERROR BADREQUEST SET needs a message: SET <id> <message>\n"
        b"$5\r\nvalue\r\n$-1\r\n-ERR empty value\r\n+PONG\r\n"
    )
    for port in [cluster.client_port, *member_ports(cluster)]:
        assert exchange(port, payload, b"+PONG\r\n") == expected


@pytest.mark.cluster
def test_the_leaders_refusals_reach_clients_of_members_unchanged(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=2, members=2)
    survivor, victim = cluster.members.values()
    victim.kill()
    cluster.wait_alive(1)
    payload = b"SET k v\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n"
    from_leader = exchange(cluster.client_port, payload, b"+PONG\r\n")
    # Two of three voters elect and keep a leader, but TOLERANCE=2 needs three holders.
    reason = b"NOREPLICAS only 2 live nodes; TOLERANCE=2 needs 3"
    assert from_leader == b"ERROR " + reason + b"\n-" + reason + b"\r\n+PONG\r\n"
    assert survivor.client_port is not None
    assert exchange(survivor.client_port, payload, b"+PONG\r\n") == from_leader


@pytest.mark.cluster
def test_redis_py_through_a_member(cluster: Cluster) -> None:
    first, _ = member_ports(cluster)
    client = redis.Redis(port=first, protocol=2)
    try:
        assert client.ping() is True
        assert client.set("key:000000001", b"over \r\n RESP") is True
        assert client.get("key:000000001") == b"over \r\n RESP"
        assert client.get("missing") is None
        assert client.dbsize() == 1  # the leader's count
        info = client.info()
        assert info["role"] == "slave"
        assert info["leader"] == f"127.0.0.1:{cluster.leader_port}"
        with pytest.raises(redis.ResponseError):
            client.set("k", "v", ex=10)
        big = bytes(range(256)) * 4000
        assert client.set("big", big) is True
        pipe = client.pipeline(transaction=False)
        for n in range(100):
            pipe.set(f"p{n}", n)
            pipe.get(f"p{n}")
        assert pipe.execute() == [x for n in range(100) for x in (True, str(n).encode())]
    finally:
        client.close()
    leader = redis.Redis(port=cluster.client_port, protocol=2)
    try:
        assert leader.get("big") == big
        assert leader.info()["role"] == "master"
    finally:
        leader.close()


def answer(client: KayitClient, line: bytes) -> bytes:
    """The reply to ``line``; a connection that failed (its node died) is made again first."""
    try:
        return client.request(line)
    except OSError:
        client.reconnect()
        return client.request(line)


@pytest.mark.cluster
def test_the_shared_port_serves_clients_through_a_failover(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=1, members=2, shared_client_port=True)
    shared = cluster.client_port
    clients = [KayitClient("127.0.0.1", shared, timeout=15) for _ in range(24)]
    try:
        for n, client in enumerate(clients):
            assert client.set(f"s{n}", f"v{n}") == b"OK"
        cluster.leader.kill()
        for n, client in enumerate(clients):
            try:
                reply = client.get(f"s{n}")
            except OSError:  # it was served by the killed leader: connect again, as clients do
                reply = client.get(f"s{n}")  # on a survivor, once it elected a leader
            assert reply == f"v{n}".encode()
        for client in clients:
            assert client.set("after", "failover") == b"OK"
        cluster.leader.start()
        cluster.wait_alive(2)
        with KayitClient("127.0.0.1", shared) as fresh:
            assert fresh.get("after") == b"failover"
            assert fresh.get("s0") == b"v0"
        with cluster.client() as old_leader:  # back as a follower, forwarding
            assert old_leader.get("after") == b"failover"
    finally:
        for client in clients:
            client.close()


def connected_clients(port: int) -> int:
    with redis.Redis(port=port, socket_timeout=10) as client:
        return int(client.info("clients")["connected_clients"])


@pytest.mark.cluster
def test_members_pass_the_shared_ports_connections_to_the_leaders_process(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=2, shared_client_port=True)
    clients = [KayitClient("127.0.0.1", cluster.client_port, timeout=15) for _ in range(24)]
    try:
        for n, client in enumerate(clients):
            assert client.set(f"s{n}", f"v{n}") == b"OK"
        # The kernel spread the 24 over the three nodes; the leader serves every one itself
        # (and the INFO connection), the members none but the INFO connection to their own port.
        assert connected_clients(cluster.client_port) >= 25
        assert [connected_clients(port) for port in member_ports(cluster)] == [1, 1]

        cluster.leader.kill()
        for n, client in enumerate(clients):
            with pytest.raises(OSError):
                client.get(f"s{n}")  # it was on the killed leader's process
            assert client.get(f"s{n}") == f"v{n}".encode()  # served during the election too
            client.close()
        # Once a new leader is elected, it takes the shared port's new connections.
        clients = [KayitClient("127.0.0.1", cluster.client_port, timeout=15) for _ in range(24)]
        for n, client in enumerate(clients):
            assert client.get(f"s{n}") == f"v{n}".encode()
        wait_for(
            lambda: sorted(connected_clients(port) for port in member_ports(cluster)) == [1, 25],
            5,
            "the new leader to serve the 24 connections",
        )
    finally:
        for client in clients:
            client.close()


@pytest.mark.cluster
def test_a_node_without_a_quorum_answers_noleader_after_waiting_for_an_election(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=1)
    (port,) = member_ports(cluster)
    with KayitClient("127.0.0.1", port, timeout=EXECUTE_DEADLINE / 2) as client:
        assert client.set("a", "before") == b"OK"
        # Of two voters one is left: no leader can be elected, and nothing is done.
        cluster.leader.kill()
        lines = [b"GET a", b"SET a during", b"GET b"]
        started = time.monotonic()
        replies = client.pipeline(lines)
        assert all(error_code(reply) is ErrorCode.NOLEADER for reply in replies), set(replies)
        # Each waited for a leader (LEADER_WAIT) before giving up, side by side.
        assert time.monotonic() - started >= LEADER_WAIT
    refused = exchange(port, b"*1\r\n$6\r\nDBSIZE\r\n", b"\r\n")
    assert refused.startswith(b"-NOLEADER ")
    cluster.leader.start()
    with KayitClient("127.0.0.1", port, timeout=EXECUTE_DEADLINE / 2) as client:
        assert client.get("a") == b"before"


@pytest.mark.cluster
def test_a_node_stopped_while_commands_wait_for_a_leader_closes_their_connection_cleanly(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=1)
    (port,) = member_ports(cluster)
    (member,) = cluster.members.values()
    cluster.leader.kill()  # one of two voters is left: the member's commands wait for a leader
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        raw.sendall(b"SET a waiting\nGET a\n")
        time.sleep(0.5)
        assert member.stop() == 0
        received = b""
        while chunk := raw.recv(1000):
            received += chunk
    # Closed at the end of the stream: with no reply if the node stopped before any came, or
    # with errors that say the outcome is unknown, never with an OK or a value.
    assert all(error_code(line) in (ErrorCode.TIMEOUT, ErrorCode.NOLEADER)
               for line in received.splitlines()), received  # fmt: skip
    assert "Traceback" not in member.log()


@pytest.mark.cluster
def test_a_member_without_a_leader_takes_clients_on_grpc_port_plus_1111(tmp_path: Path) -> None:
    grpc_port, nowhere = _port_with_free_client_port()
    member = NodeProcess(
        "member",
        grpc_port,
        ["--join", f"127.0.0.1:{nowhere}", "--grpc-port", str(grpc_port), "-q"],
        tmp_path,
    )
    member.start()
    try:
        client_port = grpc_port + CLIENT_PORT_OFFSET
        wait_for(lambda: port_open(client_port), 20, "the member's client port")
        with KayitClient("127.0.0.1", client_port) as client:
            # It has not joined anything: no leader is known, and none turns up.
            assert client.get("a") == b"ERROR NOLEADER no leader is known"
    finally:
        member.kill()


@pytest.mark.cluster
@pytest.mark.parametrize("which", ["own", "shared"])
def test_a_client_port_that_is_taken_stops_a_member_clearly(tmp_path: Path, which: str) -> None:
    grpc_port, client_port, shared_port, nowhere = free_ports(4)
    taken = client_port if which == "own" else shared_port
    with socket.create_server(("127.0.0.1", taken)):  # held without SO_REUSEPORT
        result = subprocess.run(
            [*KAYIT_NODE, "--join", f"127.0.0.1:{nowhere}", "--grpc-port", str(grpc_port),
             "--client-port", str(client_port), "--shared-client-port", str(shared_port)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    verb = "open" if which == "own" else "share"
    assert f"cannot {verb} client port 127.0.0.1:{taken}" in result.stderr
    assert "Traceback" not in result.stderr


def _port_with_free_client_port() -> tuple[int, int]:
    """A free gRPC port whose client port (+1111) is free too, and a port nobody listens on."""
    for _ in range(50):
        grpc_port, nowhere = free_ports(2)
        if grpc_port + CLIENT_PORT_OFFSET <= 65535 and port_is_free(
            "127.0.0.1", grpc_port + CLIENT_PORT_OFFSET
        ):
            return grpc_port, nowhere
    raise AssertionError("no free port with a free client port")


@pytest.mark.cluster
def test_members_pass_no_clients_to_a_leader_deposed_while_paused(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=2, shared_client_port=True)
    old = cluster.leader
    old.pause()  # it keeps its sockets, its desk for passed-on clients among them
    try:

        def new_leader() -> bool:
            try:
                return cluster.leader_grpc_port() != old.grpc_port
            except ConnectionError:
                return False  # still electing

        wait_for(new_leader, 20, "a new leader")
        # 99 connections at once: the kernel gives about a third to each of the three
        # processes. Those on the paused one's own listener wait; those that land on the two
        # that run must be served by the new leader, not passed on to the paused one's desk
        # (then only the new leader's third would answer).
        connections = [
            socket.create_connection(("127.0.0.1", cluster.client_port)) for _ in range(99)
        ]
        try:
            for n, connection in enumerate(connections):
                connection.sendall(b"SET p%d x\n" % n)
            answered = _replies_within(connections, 5.0)
        finally:
            for connection in connections:
                connection.close()
        assert answered >= 50, f"{answered} of 99 answered"
    finally:
        old.resume()


def _replies_within(connections: list[socket.socket], seconds: float) -> int:
    """How many of ``connections`` answered OK within ``seconds``."""
    waiting = {connection.fileno(): connection for connection in connections}
    answered = 0
    deadline = time.monotonic() + seconds
    while waiting and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(waiting.values()), [], [], left)
        for connection in ready:
            del waiting[connection.fileno()]
            answered += connection.recv(100) == b"OK\n"
    return answered


@pytest.mark.cluster
def test_a_stopping_leader_answers_every_command_it_read_before_it_closes(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=1, members=2)
    leader = cluster.leader.process
    assert leader is not None
    sent = 0
    with socket.create_connection(("127.0.0.1", cluster.client_port), timeout=20) as raw:
        ended = threading.Event()

        def write() -> None:
            """SETs all along, each of its own id, until the connection ends."""
            nonlocal sent
            while not ended.is_set() and sent < 100_000:
                try:
                    raw.sendall(b"".join(b"SET s%d v\n" % n for n in range(sent, sent + 20)))
                except OSError:
                    return
                sent += 20
                time.sleep(0.002)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.5)
        leader.send_signal(signal.SIGTERM)  # SETs under way and forwarded after the hand-over
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
        ended.set()
        writer.join()
    assert leader.wait(20) == 0
    # Every SET it read was carried out and answered before the connection ended, in order:
    # the first ``answered``. None of those after took effect.
    answered = received.count(b"OK\n")
    assert received == b"OK\n" * answered and 0 < answered < sent
    with KayitClient("127.0.0.1", member_ports(cluster)[0]) as client:
        assert client.get(f"s{answered - 1}") == b"v"
        unanswered = range(answered, min(sent, answered + 200))
        assert client.pipeline([b"GET s%d" % n for n in unanswered]) == [b"NOT_FOUND"] * len(
            unanswered
        )
