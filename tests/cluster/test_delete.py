"""DEL: a versioned delete committed through the metadata log, whose copies go from every
holder, at once or when a holder that was down comes back."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from tests.cluster.harness import Cluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Four nodes, TOLERANCE=1: with a holder down, SETs still find two live nodes.
    started = Cluster(tmp_path_factory.mktemp("delete"), tolerance=1, members=3)
    try:
        yield started.start()
    finally:
        started.close()


@pytest.mark.cluster
@pytest.mark.parametrize("protocol", [2, 3])
def test_del_removes_the_id_and_its_copies(cluster: Cluster, protocol: int) -> None:
    key = f"del:{protocol}"
    port = cluster.followers()[0].client_port
    assert port is not None
    client = redis.Redis(port=port, protocol=protocol)
    try:
        assert client.set(key, b"doomed") is True
        cluster.wait_promoted([key])
        assert len(cluster.copies(key)) == 2
        assert client.delete(key, "never-set", key) == 1  # a key named twice goes once
        assert client.get(key) is None
        assert client.exists(key) == 0
        assert key.encode() not in client.keys("del:*")
        wait_for(lambda: not cluster.copies(key), 10, "the copies to go")
        assert client.unlink(key) == 0
        assert client.set(key, b"again") is True  # a later SET works
        assert client.get(key) == b"again"
        assert client.unlink(key) == 1
        assert client.get(key) is None
    finally:
        client.close()


@pytest.mark.cluster
def test_text_del(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.client_port)) as raw:
        raw.sendall(b"SET del:text one two\nDEL del:text\nDEL del:text\nGET del:text\nDEL a b\n")
        raw.settimeout(10)
        received = b""
        while received.count(b"\n") < 5 and (chunk := raw.recv(65536)):
            received += chunk
    assert received.split(b"\n")[:5] == [
        b"OK",
        b"1",
        b"0",
        b"NOT_FOUND",
        b"ERROR BADREQUEST DEL takes one id: DEL <id>",
    ]


@pytest.mark.cluster
def test_a_holder_down_at_the_delete_loses_its_copy_when_it_returns(cluster: Cluster) -> None:
    client = redis.Redis(port=cluster.client_port, protocol=3)
    try:
        keys = [f"away:{n}" for n in range(12)]
        for key in keys:
            assert client.set(key, key.encode())
        cluster.wait_promoted(keys)
        away = max(cluster.member_ports, key=lambda port: len(cluster.message_files(port)))
        held = {key for key in keys if away in cluster.holders(key)}
        assert held  # some land on it
        cluster.members[away].kill()
        assert client.delete(*keys) == len(keys)
        assert client.mget(keys) == [None] * len(keys)
        assert {key for key in keys if away in cluster.holders(key)} == held  # down: kept
        assert client.info("cluster")["tombstones"] == len(held)
        cluster.members[away].start()
        wait_for(
            lambda: not any(away in cluster.holders(key) for key in keys),
            20,
            "the returning holder to delete its copies",
        )
        wait_for(lambda: client.info("cluster")["tombstones"] == 0, 10, "the tombstones to go")
        assert client.mget(keys) == [None] * len(keys)
        assert client.set(keys[0], b"back") and client.get(keys[0]) == b"back"
    finally:
        client.close()
