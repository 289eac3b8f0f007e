"""``kayit bench`` as a user runs it: a subprocess against a real kayit node (and redis-server)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kayit.bench.settings import course_settings
from kayit.bench.wire import CourseRequests
from kayit.client import KayitClient
from kayit.server.ports import free_ports
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import NodeProcess, port_open, start_lone_node, wait_for

MAX_LINE = 4096  # the node's longest line: a bigger value gets ERROR


def start_node(workdir: Path) -> tuple[NodeProcess, int]:
    return start_lone_node(workdir, "--max-line", str(MAX_LINE), "-q")


@pytest.fixture(scope="module")
def kayit_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    node, client_port = start_node(tmp_path_factory.mktemp("bench-node"))
    yield client_port
    node.kill()


def bench(port: int | str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kayit", "bench", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bench_json(port: int | str, *args: str) -> dict[str, Any]:
    done = bench(port, "--json", *args)
    result = json.loads(done.stdout)  # one JSON object and nothing else
    assert isinstance(result, dict)
    if result["errors"]:  # a failed run, and one line saying so
        assert done.returncode == 1
        assert done.stderr == (
            f"kayit bench: FAILED: {result['errors']} of {result['requests']} requests got an "
            "error, a wrong reply, or none\n"
        )
    else:
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""  # no progress line when stderr is not a terminal
    return result


@pytest.mark.cluster
def test_sets_then_gets_of_the_same_keys(kayit_port: int) -> None:
    result = bench_json(kayit_port, "-n", "300", "-c", "10", "--keyspace", "50", "--seed", "1")
    assert result["requests"] == 300
    assert result["errors"] == 0
    assert result["throughput"] > 0
    assert result["seconds"] > 0
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert {k: result[k] for k in ("protocol", "port", "connections", "pipeline", "size")} == {
        "protocol": "text",
        "port": kayit_port,
        "connections": 10,
        "pipeline": 1,
        "size": [64, 64],
    }
    with KayitClient("127.0.0.1", kayit_port) as client:
        replies = client.pipeline([b"GET key:%09d" % n for n in range(50)])
    assert set(replies) <= {b"x" * 64, b"NOT_FOUND"}
    assert replies.count(b"x" * 64) >= 45  # 300 random SETs over 50 keys miss almost none

    gets = bench_json(kayit_port, "-n", "300", "-c", "10", "--keyspace", "50", "--set-ratio", "0")
    assert (gets["requests"], gets["errors"], gets["set_ratio"]) == (300, 0, 0.0)


@pytest.mark.cluster
def test_mixed_pipelined_sets_and_gets(kayit_port: int) -> None:
    result = bench_json(
        kayit_port, "-n", "400", "-c", "8", "-P", "8", "--set-ratio", "0.5", "-d", "5-300",
        "--keyspace", "100",
    )  # fmt: skip
    assert (result["requests"], result["errors"]) == (400, 0)
    assert (result["pipeline"], result["set_ratio"], result["size"]) == (8, 0.5, [5, 300])


@pytest.mark.cluster
def test_error_replies_are_counted_and_fail_the_run(kayit_port: int) -> None:
    result = bench_json(kayit_port, "-n", "40", "-c", "4", "-d", str(MAX_LINE + 100))
    assert (result["requests"], result["errors"]) == (40, 40)
    done = bench(
        kayit_port, "-n", "20", "-c", "2", "-d", f"{MAX_LINE - 100}-{MAX_LINE + 100}", "--seed", "3"
    )
    assert done.returncode == 1
    summary = done.stdout.splitlines()
    errors = int(summary[2].split(", ")[1].removesuffix(" errors"))
    assert 0 < errors < 20  # some values fit the line, some do not
    assert summary[-1] == f"FAILED: {errors} of 20 requests got an error, a wrong reply, or none"


@pytest.mark.cluster
def test_duration_stops_by_itself(kayit_port: int) -> None:
    started = time.monotonic()
    result = bench_json(kayit_port, "--duration", "1", "-c", "4", "-n", "10", "--set-ratio", "0")
    assert time.monotonic() - started < 10
    assert 1.0 <= result["seconds"] < 5
    assert result["requests"] > 10  # the duration wins over -n
    assert result["errors"] == 0


@pytest.mark.cluster
def test_no_server_is_a_clear_failure() -> None:
    (port,) = free_ports(1)
    done = bench(port, "-n", "10")
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"kayit bench: cannot connect to 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.cluster
def test_a_server_that_dies_mid_run_is_a_clear_failure(tmp_path: Path) -> None:
    node, port = start_node(tmp_path)
    try:
        running = subprocess.Popen(
            [sys.executable, "-m", "kayit", "bench", "-p", str(port), "--duration", "20",
             "-c", "4", "--keyspace", "100", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        messages = tmp_path / "data" / f"node-{node.grpc_port}" / "messages"
        wait_for(lambda: any(messages.glob("*.msg")), 15, "the first SETs of kayit bench")
        node.kill()
        out, err = running.communicate(timeout=10)
    finally:
        node.kill()
    assert running.returncode == 1, err
    assert out == ""
    assert re.match(rf"kayit bench: connection \d+ to 127\.0\.0\.1:{port} (failed|was closed)", err)
    assert "Traceback" not in err


@pytest.mark.cluster
def test_course_after_an_error_reply_connects_again_and_goes_on(kayit_port: int) -> None:
    # This node's lines end at 4096 bytes: the big SETs (commands 200 and 400) get ERROR.
    result = bench_json(kayit_port, "--course", "-n", "401", "--seed", "2")
    assert (result["requests"], result["errors"], result["reconnects"]) == (401, 2, 2)
    commands = result["commands"]
    assert commands["big_set"]["requests"] == commands["big_set"]["errors"] == 2
    assert commands["set"]["errors"] == commands["get"]["errors"] == 0
    assert commands["set"]["requests"] + commands["get"]["requests"] == 399
    assert 0 < commands["set"]["latency_ms"]["p50"] <= commands["set"]["latency_ms"]["p99"]


@pytest.mark.cluster
def test_course_stores_what_the_stress_client_sends(tmp_path: Path) -> None:
    node, port = start_lone_node(tmp_path, "-q")
    try:
        result = bench_json(port, "--course", "-n", "250", "--seed", "9")
        assert (result["requests"], result["errors"], result["reconnects"]) == (250, 0, 0)
        assert result["commands"]["big_set"]["requests"] == 1
        # The same seed gives the same commands: every key holds its last SET's value.
        settings = course_settings(("127.0.0.1", port), 250, None, 9, None, None)
        replay = CourseRequests(settings, random.Random(9))
        last: dict[bytes, int] = {}
        for _ in range(250):
            kind, line = replay.next()
            if kind != "get":
                _, key, value = line.split(b" ", 2)
                last[key] = len(value)
        with KayitClient("127.0.0.1", port) as client:
            stored = client.pipeline([b"GET " + key for key in last])
        assert [len(value) for value in stored] == list(last.values())
        assert 1_000_000 in last.values()
    finally:
        node.kill()


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    (port,) = free_ports(1)
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port), 10, "redis-server")
        yield port
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def redis_dbsize(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
        reply = connection.recv(100)
    assert reply.startswith(b":") and reply.endswith(b"\r\n"), reply
    return int(reply[1:-2])


@pytest.mark.cluster
def test_resp_against_redis(redis_port: int) -> None:
    result = bench_json(
        redis_port, "--protocol", "resp", "-n", "3000", "-c", "10", "-P", "4",
        "--set-ratio", "0.5", "-d", "5-500", "--keyspace", "200",
    )  # fmt: skip
    assert (result["protocol"], result["requests"], result["errors"]) == ("resp", 3000, 0)
    assert result["throughput"] > 0
    assert 150 <= redis_dbsize(redis_port) <= 200


@pytest.mark.cluster
def test_wrong_replies_are_counted(redis_port: int) -> None:
    # Redis answers the text protocol's inline SET with +OK, which is not kayit's OK.
    result = bench_json(redis_port, "--protocol", "text", "-n", "50", "-c", "5")
    assert (result["requests"], result["errors"]) == (50, 50)


@pytest.mark.cluster
def test_connections_spread_over_several_nodes_and_pass_over_a_dead_one(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(tolerance=0, members=1)
    (member,) = cluster.members.values()
    (dead,) = free_ports(1)
    ports = f"{dead},{member.client_port},{cluster.client_port}"
    result = bench_json(ports, "-n", "300", "-c", "6", "--keyspace", "50", "--set-ratio", "0.5")
    assert (result["requests"], result["errors"]) == (300, 0)
    assert result["addresses"] == [
        f"127.0.0.1:{port}" for port in (dead, member.client_port, cluster.client_port)
    ]


@pytest.mark.cluster
def test_a_connection_whose_node_dies_moves_on_to_the_next(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(tolerance=0, members=1)
    (member,) = cluster.members.values()
    ports = f"{member.client_port},{cluster.client_port}"
    running = subprocess.Popen(
        [sys.executable, "-m", "kayit", "bench", "-p", ports, "--duration", "4", "-c", "4",
         "--keyspace", "1000000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        messages = cluster.messages_dir(cluster.leader_port)
        wait_for(lambda: any(messages.glob("*.msg")), 15, "the first SETs of kayit bench")
        member.kill()
        stored_then = cluster.count_on_disk(cluster.leader_port)
        out, err = running.communicate(timeout=30)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    result = json.loads(out)
    assert result["requests"] > 0
    # The requests in flight on the member when it died got no reply: the run failed.
    assert running.returncode == (1 if result["errors"] else 0), err
    # Every connection went on, on the leader: SETs kept arriving after the member died.
    cluster.wait_drained()  # their files are written behind the OKs
    assert cluster.count_on_disk(cluster.leader_port) > stored_then + 100
