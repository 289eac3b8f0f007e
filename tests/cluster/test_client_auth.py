"""Client authentication on real nodes, as Redis has it: --requirepass, AUTH in both protocols,
through a node that forwards to the leader, and in kayit's own client, bench and cluster."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kayit.client import AuthenticationFailed, KayitClient
from kayit.local_cluster import PASSWORD_FILE
from kayit.server.ports import port_is_free
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import exchange, resp, start_lone_node

PASSWORD = "correct horse battery staple"  # spaces and all
NOAUTH = b"ERROR NOAUTH Authentication required."
WRONGPASS = b"ERROR WRONGPASS invalid username-password pair or user is disabled."


def password_file(directory: Path) -> Path:
    path = directory / "client-pass"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The client port of a node that asks for PASSWORD."""
    workdir = tmp_path_factory.mktemp("guarded")
    node, port = start_lone_node(workdir, "--requirepass-file", str(password_file(workdir)))
    yield port
    node.kill()


@pytest.fixture(scope="module")
def open_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The client port of a node that asks for no password."""
    node, port = start_lone_node(tmp_path_factory.mktemp("open"))
    yield port
    node.kill()


@pytest.mark.cluster
def test_text_clients_authenticate_before_anything_else(guarded: int) -> None:
    secret = PASSWORD.encode()
    replies = exchange(
        guarded,
        b"GET a\nSET a 1\nFOO\nAUTH\nAUTH wrong\nAUTH " + secret + b" \nAUTH " + secret
        + b"\nSET a 1\nGET a\nAUTH wrong\nGET a\n",
        11,
    )  # fmt: skip
    assert replies == [
        NOAUTH, NOAUTH, NOAUTH,
        b"ERROR BADREQUEST AUTH needs a password: AUTH <password>",
        WRONGPASS, WRONGPASS,  # a trailing space is part of what was given
        b"OK", b"OK", b"1",
        WRONGPASS, b"1",  # a failed AUTH does not undo the one before
    ]  # fmt: skip
    # Each connection authenticates for itself.
    assert exchange(guarded, b"GET a\n", 1) == [NOAUTH]


@pytest.mark.cluster
def test_resp_clients_meet_what_redis_answers(guarded: int) -> None:
    secret = PASSWORD.encode()
    replies = exchange(
        guarded,
        resp(b"PING") + resp(b"GET", b"a") + resp(b"HELLO") + resp(b"HELLO", b"2")
        + resp(b"AUTH") + resp(b"AUTH", b"a", b"b", b"c") + resp(b"AUTH", b"wrong")
        + resp(b"AUTH", b"admin", secret) + resp(b"HELLO", b"2", b"AUTH", b"default", b"x")
        + resp(b"AUTH", b"default", secret) + resp(b"PING"),
        11,
    )  # fmt: skip
    hello_noauth = b"-NOAUTH HELLO must be called with the client already authenticated"
    wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r"
    assert replies[0] == replies[1] == b"-NOAUTH Authentication required.\r"
    assert replies[2].startswith(hello_noauth) and replies[3].startswith(hello_noauth)
    assert replies[4:] == [
        b"-ERR wrong number of arguments for 'auth' command\r",
        b"-ERR syntax error\r",
        wrongpass, wrongpass, wrongpass,
        b"+OK\r", b"+PONG\r",
    ]  # fmt: skip
    # HELLO authenticates and answers at once; QUIT needs no password.
    with socket.create_connection(("127.0.0.1", guarded), timeout=10) as raw:
        raw.sendall(resp(b"HELLO", b"2", b"AUTH", b"default", secret) + resp(b"PING"))
        received = b""
        while not received.endswith(b"+PONG\r\n") and (chunk := raw.recv(65536)):
            received += chunk
        assert received.startswith(b"*14\r\n$6\r\nserver\r\n$5\r\nkayit\r\n")
    assert exchange(guarded, resp(b"QUIT") + resp(b"PING"), 2) == [b"+OK\r", b""]


@pytest.mark.cluster
@pytest.mark.parametrize("protocol", [2, 3])  # 3: HELLO 3 AUTH default <password>
def test_redis_py_with_a_password(guarded: int, protocol: int) -> None:
    client = redis.Redis(port=guarded, protocol=protocol, password=PASSWORD)
    try:
        assert client.set("redis:1", b"with a password") is True
        assert client.get("redis:1") == b"with a password"
        assert client.ping() is True
    finally:
        client.close()
    for password in (None, "wrong"):
        # Not retried: redis-py retries connection errors, refusals of a password among them.
        once = Retry(NoBackoff(), 0)
        refused = redis.Redis(port=guarded, protocol=protocol, password=password, retry=once)
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                refused.get("redis:1")
        finally:
            refused.close()


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_with_a_password(guarded: int) -> None:
    def cli(*args: str) -> str:
        command = ["redis-cli", "-p", str(guarded), "--no-auth-warning", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()

    assert cli("-a", PASSWORD, "SET", "cli:1", "via redis-cli") == "OK"
    assert cli("-a", PASSWORD, "GET", "cli:1") == "via redis-cli"
    assert cli("GET", "cli:1") == "NOAUTH Authentication required."


@pytest.mark.cluster
def test_auth_without_a_password_set_is_an_error_as_in_redis(open_port: int) -> None:
    replies = exchange(
        open_port,
        b"AUTH x\n" + resp(b"AUTH", b"x") + resp(b"AUTH", b"default", b"x") + b"GET a\n",
        4,
    )
    no_password = b"AUTH <password> called without any password configured for the default user."
    assert replies[0].startswith(b"ERROR BADREQUEST " + no_password)
    assert replies[1].startswith(b"-ERR " + no_password)
    assert replies[2:] == [b"+OK\r", b"NOT_FOUND"]  # the default user has no password


@pytest.mark.cluster
def test_the_library_client_authenticates_on_every_connection(guarded: int) -> None:
    with KayitClient("127.0.0.1", guarded, password=PASSWORD) as client:
        assert client.set("lib", "hello") == b"OK"
        client.reconnect()
        assert client.get("lib") == b"hello"
    with pytest.raises(AuthenticationFailed, match="WRONGPASS"):
        KayitClient("127.0.0.1", guarded, password="wrong")
    with KayitClient("127.0.0.1", guarded) as client:
        assert client.get("lib") == NOAUTH


def kayit(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kayit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.cluster
def test_kayit_client_and_bench_take_a_password(guarded: int) -> None:
    address = f"127.0.0.1:{guarded}"
    done = kayit("client", "-a", PASSWORD, address, stdin="SET cli hi\nGET cli\n")
    assert (done.returncode, done.stdout) == (0, "OK\nhi\n"), done.stderr
    refused = kayit("client", "--pass", "wrong", address, stdin="GET cli\n")
    assert refused.returncode == 1
    assert "refused the password: ERROR WRONGPASS" in refused.stderr

    for protocol in ("text", "resp"):
        run = kayit("bench", "-p", str(guarded), "-a", PASSWORD, "-n", "400", "-c", "4",
                    "-P", "4", "--protocol", protocol, "--json")  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert '"errors": 0' in run.stdout
    wrong = kayit("bench", "-p", str(guarded), "--pass", "wrong", "-n", "10", "-c", "2")
    assert wrong.returncode == 1
    assert "refused the password" in wrong.stderr


@pytest.mark.cluster
def test_a_client_authenticated_at_a_follower_is_served_by_the_leader(
    start_cluster: ClusterFactory, tmp_path: Path
) -> None:
    path = password_file(tmp_path)
    cluster = start_cluster(tolerance=1, members=2, extra=("--requirepass-file", str(path)))
    follower = cluster.followers()[0]
    assert follower.client_port is not None
    with KayitClient("127.0.0.1", follower.client_port, password=PASSWORD) as client:
        assert client.set("through", "a follower") == b"OK"
        assert client.get("through") == b"a follower"
    with KayitClient("127.0.0.1", cluster.client_port, password=PASSWORD) as client:
        assert client.get("through") == b"a follower"
    assert exchange(follower.client_port, b"GET through\n", 1) == [NOAUTH]


@pytest.mark.cluster
def test_kayit_cluster_hands_the_password_over_in_a_file(tmp_path: Path) -> None:
    base = next(
        base
        for base in (random.randrange(20_000, 30_000) for _ in range(200))
        if all(port_is_free("127.0.0.1", port) for port in range(base, base + 4))
    )
    client_port, grpc_port = base, base + 2  # two nodes: two of each
    data = tmp_path / "data"
    saved = data / PASSWORD_FILE
    process = subprocess.Popen(
        [sys.executable, "-m", "kayit", "cluster", "--members", "1", "--tolerance", "0",
         "--client-port", str(client_port), "--grpc-port", str(grpc_port),
         "--data-dir", str(data), "--report-every", "60", "--requirepass", PASSWORD],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    output = ""
    try:
        # Until it says whether its members joined: only then does it stop them on SIGTERM.
        while (line := process.stdout.readline()) and not line.startswith("cluster "):
            output += line
        assert "then AUTH <password>, SET 1 hello" in output
        assert saved.read_text() == PASSWORD + "\n"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        for port in (client_port, client_port + 1):
            assert exchange(port, b"GET x\n", 1) == [NOAUTH]
        with KayitClient("127.0.0.1", client_port + 1, password=PASSWORD) as client:
            assert wait_set(client) == b"OK"
        nodes = nodes_reading(saved)
        assert len(nodes) == 2  # both nodes read the file ...
        assert all(PASSWORD.encode() not in line for line in nodes.values())  # ... no password
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        for pid in nodes_reading(saved):  # none, unless the cluster failed to stop them
            os.kill(pid, signal.SIGKILL)


def nodes_reading(path: Path) -> dict[int, bytes]:
    """The command lines of the processes of this machine that name ``path``, by pid."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = entry.read_bytes()
        except OSError:
            continue  # ended meanwhile
        if str(path).encode() in line:
            found[int(entry.parent.name)] = line
    return found


def wait_set(client: KayitClient) -> bytes:
    """SET once the member has joined (until then a SET may find too few nodes)."""
    deadline = time.monotonic() + 20
    while (reply := client.set("c", "v")) != b"OK" and time.monotonic() < deadline:
        time.sleep(0.2)
    return reply
