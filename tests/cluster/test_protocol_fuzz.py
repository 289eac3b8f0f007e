"""Random and broken client input, thrown at a live ``kayit node`` over many connections: text
lines and RESP mixed on one connection, random bytes, RESP headers with huge, negative or
lying lengths, nested arrays, lines without a newline or past the line limit, input cut into
random chunks, and connections that half-close or reset.

After every example the node is still running and answers a new client; a connection that
half-closes is always closed by the node once its replies are out (nothing hangs); and at the
end every value set before the fuzzing reads back intact, in both protocols, and SIGTERM stops
the node cleanly. Hypothesis runs derandomized and without its database, so every run throws
the same inputs."""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kayit.client import KayitClient
from tests.cluster.harness import NodeProcess, start_lone_node, wait_for

MAX_LINE = 4096  # the node's --max-line: small, so that input past it is cheap to make
# Set before the fuzzing, read back after it. No generated command names these ids.
KEPT = {
    "kept:text": b"a value set over text",
    "kept:resp": b"binary \x00\xff\r\n and newlines, set over RESP",
    "kept:long": bytes(range(256)) * 8,
}
EOF_TIMEOUT = 10.0  # a half-closed connection is closed by the node well within this


@dataclass(frozen=True)
class FuzzedNode:
    process: NodeProcess
    client_port: int


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedNode]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    process, client_port = start_lone_node(
        workdir, "--shared-client-port", "0", "--max-line", str(MAX_LINE), "--heartbeat", "0.2"
    )
    try:
        process.wait_ready()
        with KayitClient("127.0.0.1", client_port) as client:
            wait_for(lambda: client.set("warm", "up") == b"OK", 20, "the node to take SETs")
            assert client.set("kept:text", KEPT["kept:text"].decode()) == b"OK"
        resp_client = redis.Redis(port=client_port, protocol=2)
        for key in ("kept:resp", "kept:long"):
            assert resp_client.set(key, KEPT[key])
        resp_client.close()
        yield FuzzedNode(process, client_port)
    finally:
        process.kill()


# -- what is thrown ------------------------------------------------------------------------------


def bulk(payload: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(payload), payload)


def array(parts: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(bulk(part) for part in parts)


NAMES = [b"SET", b"GET", b"set", b"Get", b"PING", b"ECHO", b"QUIT", b"DBSIZE", b"INFO",
         b"COMMAND", b"CONFIG", b"CLIENT", b"SELECT", b"HELLO", b"DEL", b"", b"\xff"]  # fmt: skip
keys = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=12).map(lambda t: ("fz:" + t).encode()),
    st.binary(max_size=12).map(lambda b: b"fz:" + b),
    st.sampled_from([b"", b"fz: spaced", b"fz:" + b"k" * 300, b"../fz", b"fz:\x00"]),
)
values = st.one_of(
    st.binary(max_size=40),
    st.integers(0, MAX_LINE + 16).map(lambda n: b"v" * n),  # around the line limit
)
resp_commands = st.builds(
    lambda name, args: array([name, *args]),
    st.sampled_from(NAMES),
    st.lists(st.one_of(keys, values), max_size=4),
)
text_commands = st.builds(
    lambda name, key, value, end: b" ".join(p for p in (name, key, value) if p is not None) + end,
    st.sampled_from(NAMES),
    keys,
    st.none() | values.filter(lambda v: b"\n" not in v),
    st.sampled_from([b"\n", b"\r\n", b"", b"\r", b"\n\n"]),  # b"": a line without its newline
)
broken_resp = st.one_of(
    st.integers(-(10**20), 10**20).map(lambda n: b"*%d\r\n" % n),  # any count, even negative
    st.integers(-(10**20), 10**20).map(lambda n: b"*1\r\n$%d\r\n" % n),  # any bulk length
    st.builds(  # a bulk length that lies
        lambda n, data: b"*1\r\n$%d\r\n%b\r\n" % (n, data),
        st.integers(0, 64),
        st.binary(max_size=64),
    ),
    st.just(b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n"),  # nested arrays
    st.just(b"*1\r\n" + b"9" * 64),  # a header that never ends
    st.just(b"*" + b"1" * 40 + b"\r\n"),  # a count longer than any header
    st.just(b"*3\r\n$3\r\nSET\r\n$4\r\nfz:x\r\n$%d\r\n" % (MAX_LINE * 4)),  # too long, unsent
    st.binary(max_size=30).map(lambda b: b"*" + b),
    st.sampled_from([b"$3\r\nfoo\r\n", b":1\r\n", b"+OK\r\n", b"-ERR\r\n", b"*0\r\n", b"*-1\r\n"]),
)  # fmt: skip
junk = st.one_of(
    st.binary(max_size=120),
    st.integers(MAX_LINE - 2, MAX_LINE * 3).map(lambda n: b"x" * n),  # past the line limit
    st.integers(1, 16).map(lambda n: b"\xff\xfe" * n + b"\n"),  # not UTF-8
)
streams = st.lists(st.one_of(resp_commands, text_commands, broken_resp, junk), max_size=6).map(
    b"".join
)


@dataclass(frozen=True)
class Session:
    """One connection: its bytes, cut into chunks at ``cuts``, then how it ends."""

    data: bytes
    cuts: tuple[int, ...]
    ending: str  # "half-close": shutdown(SHUT_WR); "reset": RST; "close": a plain close

    def chunks(self) -> list[bytes]:
        points = sorted({0, len(self.data), *(c for c in self.cuts if c < len(self.data))})
        return [self.data[a:b] for a, b in itertools.pairwise(points)]


sessions = st.builds(
    Session,
    streams,
    st.lists(st.integers(0, 20_000), max_size=6).map(tuple),
    st.sampled_from(["half-close", "half-close", "reset", "close"]),
)


# -- how it is thrown ----------------------------------------------------------------------------


def drain_until_closed(sock: socket.socket, timeout: float) -> bool:
    """Read until the node closes the connection; False if it has not within ``timeout``."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def send_all(sock: socket.socket, chunk: bytes) -> bool:
    """False if the node closed the connection (as it does after broken RESP or QUIT)."""
    try:
        sock.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def play(port: int, connections: list[Session]) -> None:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in connections]
    try:
        chunks = [session.chunks() for session in connections]
        open_ = [True] * len(socks)
        # Chunks of the connections interleave, so that the node has them all under way.
        for step in range(max((len(c) for c in chunks), default=0)):
            for index, sock in enumerate(socks):
                if open_[index] and step < len(chunks[index]):
                    open_[index] = send_all(sock, chunks[index][step])
        for sock, session in zip(socks, connections, strict=True):
            if session.ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                sock.close()
            elif session.ending == "half-close":
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    continue  # closed by the node already
                assert drain_until_closed(sock, EOF_TIMEOUT), (
                    f"the node kept a half-closed connection open: {session!r}"
                )
    finally:
        for sock in socks:
            sock.close()


def node_answers(fuzzed: FuzzedNode) -> None:
    assert fuzzed.process.running, f"the node exited:\n{fuzzed.process.log()[-3000:]}"
    with KayitClient("127.0.0.1", fuzzed.client_port, timeout=10) as client:
        assert client.get("kept:text") == KEPT["kept:text"]


@pytest.mark.cluster
@settings(
    max_examples=5000,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(connections=st.lists(sessions, min_size=1, max_size=3))
def test_random_and_broken_input_neither_crashes_nor_hangs_the_node(
    node: FuzzedNode, connections: list[Session]
) -> None:
    play(node.client_port, connections)
    node_answers(node)


@pytest.mark.cluster
def test_after_the_fuzzing_the_data_is_intact_and_the_node_stops_cleanly(
    node: FuzzedNode,
) -> None:
    node_answers(node)
    with KayitClient("127.0.0.1", node.client_port) as client:
        assert client.get("kept:text") == KEPT["kept:text"]
        assert client.set("after", "fuzzing") == b"OK"
        assert client.get("after") == b"fuzzing"
    resp_client = redis.Redis(port=node.client_port, protocol=2)
    for key, value in KEPT.items():
        assert resp_client.get(key) == value
    resp_client.close()
    assert node.process.stop() == 0
    assert re.search(r'File ".*/kayit/', node.process.log()) is None
