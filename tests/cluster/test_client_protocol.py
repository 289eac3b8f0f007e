"""What a client sees on the text port of a real leader."""

from __future__ import annotations

import socket

import pytest

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster

MAX_LINE = 64 * 1024


@pytest.fixture
def cluster(start_cluster: ClusterFactory) -> Cluster:
    return start_cluster(tolerance=1, members=2, extra=("--max-line", str(MAX_LINE)))


@pytest.mark.cluster
def test_one_megabyte_message_round_trips(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=2, members=2)
    message = ("0123456789abcdef" * 62500).encode()  # 1,000,000 bytes
    with cluster.client() as client:
        assert client.set("big", message) == b"OK"
        assert client.get("big") == message
    cluster.wait_promoted(["big"])  # every holder's file is written behind its copy log
    assert all(
        (cluster.messages_dir(port) / "big.msg").read_bytes() == message
        for port in [cluster.leader_port, *cluster.member_ports]
    )


@pytest.mark.cluster
def test_pipelined_commands_in_one_write_get_replies_in_order(cluster: Cluster) -> None:
    lines = []
    expected = []
    for n in range(100):
        lines += [f"SET p{n} value {n}".encode(), f"GET p{n}".encode()]
        expected += [b"OK", f"value {n}".encode()]
    with cluster.client() as client:
        assert client.pipeline(lines) == expected


@pytest.mark.cluster
def test_spaces_crlf_and_case(cluster: Cluster) -> None:
    with cluster.client() as client:
        assert client.request(b"set 42 hello  world ") == b"OK"
        assert client.request(b"GeT 42\r") == b"hello  world "
        assert client.request(b"GET 404") == b"NOT_FOUND"


BAD_INPUTS = [
    b"",
    b"   ",
    b"FOO 1",
    b"SET",
    b"SET 1",
    b"SET 1 ",
    b"GET",
    b"GET 1 2",
    b"GET  1",
    b"SET \xff\xfe x",
    b"SET 1 \xc3\x28",
    b"GET " + b"9" * 201,
    b"DELETE 1",
    b"DEL 1 2",
]


@pytest.mark.cluster
def test_bad_input_gets_one_error_line_and_changes_nothing(cluster: Cluster) -> None:
    with cluster.client() as client:
        assert client.set("1", "kept") == b"OK"
        for line in BAD_INPUTS:
            reply = client.request(line)
            assert reply.startswith(b"ERROR BADREQUEST "), (line, reply)
        assert client.request(b"X" * (MAX_LINE + 10)).startswith(b"ERROR BADREQUEST ")
        assert client.get("1") == b"kept"
    cluster.wait_promoted(["1"])
    assert (cluster.messages_dir(cluster.leader_port) / "1.msg").read_bytes() == b"kept"


@pytest.mark.cluster
def test_over_long_line_is_discarded_up_to_its_newline(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(b"SET long " + b"y" * (MAX_LINE * 3))
        raw.sendall(b"z" * 1000 + b"\nGET long\nSET after ok\nGET after\n")
        replies = _read_lines(raw, 4)
    assert replies[0].startswith(b"ERROR BADREQUEST ")
    assert replies[1:] == [b"NOT_FOUND", b"OK", b"ok"]


@pytest.mark.parametrize(
    "message_id", ["../x", "/etc/passwd", ".", "..", "NUL", "a/b", "%2E", "ş-ü_é", "key:0001"]
)
@pytest.mark.cluster
def test_path_like_ids_stay_inside_the_data_directory(cluster: Cluster, message_id: str) -> None:
    with cluster.client() as client:
        assert client.set(message_id, f"value of {message_id}") == b"OK"
        assert client.get(message_id) == f"value of {message_id}".encode()
    data = cluster.data_dir
    outside = [p for p in cluster.workdir.rglob("*") if p.is_file() and data not in p.parents]
    assert all(p.suffix == ".log" for p in outside), outside
    for port in [cluster.leader_port, *cluster.member_ports]:
        assert all(
            p.parent == cluster.messages_dir(port) for p in cluster.messages_dir(port).rglob("*")
        )


@pytest.mark.cluster
def test_node_survives_abrupt_disconnects_and_binary_noise(cluster: Cluster) -> None:
    for noise in [b"\x00" * 100, bytes(range(256)) * 10, b"SET x " + b"a" * 5000]:
        with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
            raw.sendall(noise)
    with cluster.client() as client:
        assert client.set("alive", "yes") == b"OK"
        assert client.get("alive") == b"yes"
    assert cluster.leader.running


@pytest.mark.cluster
def test_nothing_but_replies_is_written(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.settimeout(0.5)
        with pytest.raises(TimeoutError):
            raw.recv(100)  # no banner, no prompt
        raw.sendall(b"GET nothing\n")
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(10)
        received = b""
        while chunk := raw.recv(100):
            received += chunk
    assert received == b"NOT_FOUND\n"


def _read_lines(raw: socket.socket, count: int) -> list[bytes]:
    raw.settimeout(10)
    buffer = b""
    while buffer.count(b"\n") < count:
        chunk = raw.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return buffer.split(b"\n")[:count]


@pytest.mark.cluster
@pytest.mark.parametrize("cache_mb", ["0", "1"])
def test_pipelined_sets_and_gets_of_one_id_see_each_other_in_order(
    start_cluster: ClusterFactory, cache_mb: str
) -> None:
    cluster = start_cluster(tolerance=1, members=1, extra=("--cache-mb", cache_mb))
    latest: dict[str, str] = {}
    with cluster.client() as client:
        for start in range(0, 600, 100):  # 5 KB values over 200 ids: a 1 MiB cache evicts
            lines = []
            expected = []
            for n in range(start, start + 100):
                key = f"c{n // 3}"  # three SET+GET pairs per id, back to back
                value = f"{key} round {n} " + "v" * 5000
                lines += [f"SET {key} {value}".encode(), f"GET {key}".encode()]
                expected += [b"OK", value.encode()]
                latest[key] = value
            assert client.pipeline(lines) == expected
    assert cluster.misread(latest) == []
