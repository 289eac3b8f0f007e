"""Limits of the client port under hostile clients, on real nodes: each is reached by one client
while a normal client on another connection keeps being served, and the node's memory stays
bounded in the two cases measured before there were limits (a client that reads no replies,
and clients that never end their lines)."""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kayit.client import KayitClient
from tests.cluster.harness import NodeProcess, start_lone_node, wait_for

MB = 1024 * 1024
BIG = b"x" * 1_000_000  # the course client's largest message
RSS_BOUND = 100 * MB  # generous: what the defaults allow is about a third of it


def rss(node: NodeProcess) -> int:
    assert node.process is not None
    status = Path(f"/proc/{node.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def watch_rss(node: NodeProcess, until: Callable[[], bool], timeout: float, what: str) -> int:
    """The highest RSS seen, sampled until ``until()``."""
    peak = rss(node)
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        peak = max(peak, rss(node))
        time.sleep(0.02)
    return max(peak, rss(node))


def report(case: str, before: int, peak: int, after: int) -> None:
    print(
        f"\n{case}: node RSS {before / MB:.1f} MB before, {peak / MB:.1f} MB at most, "
        f"{after / MB:.1f} MB after (+{(peak - before) / MB:.1f} MB at most)"
    )


def read_until_closed(raw: socket.socket, timeout: float = 10) -> bytes:
    """What the node sent before it closed the connection (a reset ends it too)."""
    raw.settimeout(timeout)
    received = b""
    try:
        while chunk := raw.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def refusal(raw: socket.socket) -> bytes | None:
    """What the node said before it closed ``raw``; None while it keeps it open."""
    try:
        return read_until_closed(raw, timeout=2)
    except TimeoutError:
        return None


@pytest.mark.cluster
def test_a_client_that_reads_no_replies_is_disconnected(tmp_path: Path) -> None:
    node, port = start_lone_node(tmp_path)  # the default limits
    try:
        with KayitClient("127.0.0.1", port) as normal:
            assert normal.set("big", BIG) == b"OK"
            before = rss(node)
            # 3.2 KB of GETs of a 1 MB message, whose replies it never reads: 400 MB of
            # replies, were they all kept.
            hostile = socket.create_connection(("127.0.0.1", port))
            hostile.sendall(b"GET big\n" * 400)

            def disconnected() -> bool:
                return "passed --client-output-limit" in node.log()

            peak = watch_rss(node, disconnected, 30, "the reader of nothing to be dropped")
            assert normal.get("big") == BIG
            assert normal.set("small", "still served") == b"OK"
            after = rss(node)
        report("400 unread GETs of 1 MB", before, peak, after)
        assert peak - before < RSS_BOUND
        assert after - before < RSS_BOUND
        received = read_until_closed(hostile)  # what the kernel still held, then the end
        assert len(received) < 400 * len(BIG)
        hostile.close()
    finally:
        node.kill()


@pytest.mark.cluster
def test_lines_that_never_end_are_refused_once_they_pass_the_budget(tmp_path: Path) -> None:
    node, port = start_lone_node(tmp_path)  # the default limits
    attackers: list[socket.socket] = []
    try:
        attackers += [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        with KayitClient("127.0.0.1", port) as normal:
            before = peak = rss(node)
            chunk = b"y" * MB
            closed: set[int] = set()  # found closed by a failed send
            for round_ in range(7):  # 7 MiB each, without a newline: 280 MiB in all
                for number, raw in enumerate(attackers):
                    if number in closed:
                        continue
                    try:
                        raw.sendall(chunk)
                    except OSError:
                        closed.add(number)
                    peak = max(peak, rss(node))
                assert normal.set(f"during-{round_}", BIG) == b"OK"
            assert normal.get("during-6") == BIG
            time.sleep(0.5)
            peak = max(peak, rss(node))
            after = rss(node)
        report("40 connections sending 7 MiB without a newline", before, peak, after)
        assert peak - before < RSS_BOUND
        refused = [answer for raw in attackers if (answer := refusal(raw)) is not None]
        # The default budget holds 32 MiB: four lines of 7 MiB, and a fifth on its way.
        assert len(refused) >= 40 - 5
        limit_lines = [r for r in refused if r.startswith(b"ERROR LIMIT ")]
        assert limit_lines, "no refused client was told why"
        assert all(line.endswith(b"closing\n") for line in limit_lines)
        assert node.log().count("passed --partial-line-budget") == len(refused)
    finally:
        for raw in attackers:
            raw.close()
        node.kill()


@pytest.mark.cluster
def test_one_client_past_max_clients_is_refused(tmp_path: Path) -> None:
    node, port = start_lone_node(tmp_path, "--max-clients", "3")
    held: list[socket.socket] = []
    try:
        with KayitClient("127.0.0.1", port) as normal:
            for _ in range(2):
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                raw.sendall(b"GET x\n")
                assert raw.recv(100) == b"NOT_FOUND\n"  # counted: it was served
                held.append(raw)
            extra = socket.create_connection(("127.0.0.1", port))
            assert read_until_closed(extra) == b"ERROR LIMIT max number of clients reached\n"
            extra.close()
            assert normal.set("k", "v") == b"OK"
            held.pop().close()

            def served() -> bool:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    raw.sendall(b"GET k\n")
                    return raw.recv(100) == b"v\n"

            wait_for(served, 10, "a freed slot to serve a new client")
            assert normal.get("k") == b"v"
    finally:
        for raw in held:
            raw.close()
        node.kill()


@pytest.mark.cluster
def test_idle_connections_are_closed_after_the_timeout(tmp_path: Path) -> None:
    node, port = start_lone_node(tmp_path, "--timeout", "1")
    idle: list[socket.socket] = []
    try:
        idle += [socket.create_connection(("127.0.0.1", port)) for _ in range(2000)]
        half_line = socket.create_connection(("127.0.0.1", port))
        idle.append(half_line)
        half_line.sendall(b"SET never-finished ")
        with KayitClient("127.0.0.1", port) as busy:
            started = time.monotonic()
            while time.monotonic() - started < 3:  # a request every 0.3 s: never idle for 1 s
                assert busy.set("busy", "yes") == b"OK"
                time.sleep(0.3)
            for raw in idle:
                assert read_until_closed(raw, timeout=10) == b""
            assert busy.get("busy") == b"yes"
        # A client whose connection timed out connects again and is served.
        with KayitClient("127.0.0.1", port) as again:
            assert again.get("never-finished") == b"NOT_FOUND"
    finally:
        for raw in idle:
            raw.close()
        node.kill()


@pytest.mark.cluster
def test_the_largest_unfinished_request_is_refused_in_its_own_protocol(tmp_path: Path) -> None:
    node, port = start_lone_node(
        tmp_path, "--max-line", str(MB), "--partial-line-budget", str(MB + MB // 2)
    )
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as larger,
            socket.create_connection(("127.0.0.1", port)) as smaller,
        ):
            unfinished = b"*3\r\n$3\r\nSET\r\n$1\r\nr\r\n$1000000\r\n" + b"r" * 900_000
            larger.sendall(unfinished)
            time.sleep(0.3)  # the node holds it all before the other line passes the budget
            smaller.sendall(b"SET t " + b"t" * 700_000)
            refusal = re.fullmatch(
                rb"-ERR LIMIT unfinished requests of all clients take too much memory, and this "
                rb"connection's \((\d+) bytes\) the most; closing\r\n",
                read_until_closed(larger),
            )
            assert refusal is not None
            # What it holds: the bytes sent, less the framing of the elements taken already.
            assert 900_000 < int(refusal.group(1)) <= len(unfinished)
            smaller.sendall(b"\n")
            smaller.settimeout(10)
            assert smaller.recv(100) == b"OK\n"
    finally:
        node.kill()


@pytest.mark.cluster
def test_the_course_stress_client_meets_no_limit(tmp_path: Path) -> None:
    """One connection, one command at a time, messages of 5-2000 bytes and one of 1,000,000
    bytes every 200th: the defaults must never touch it."""
    node, port = start_lone_node(tmp_path)
    rng = random.Random(7)
    try:
        with KayitClient("127.0.0.1", port) as client:
            for number in range(1, 601):
                message = BIG if number % 200 == 0 else b"m" * rng.randint(5, 2000)
                assert client.set(f"stress-{number}", message) == b"OK"
                assert client.get(f"stress-{number}") == message
        log = node.log()
        assert "--client-output-limit" not in log and "--partial-line-budget" not in log
    finally:
        node.kill()
