"""`kayit cluster` is safe to start and to lose: it starts nothing on ports another cluster
holds, stops with one clear line when its leader cannot start, takes its nodes with it
however it dies, and runs on when the reader of its output goes away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kayit.client import KayitClient
from kayit.server.ports import port_is_free
from tests.cluster.harness import free_port_run, wait_for

KAYIT = [sys.executable, "-m", "kayit"]
MEMBERS = 2
PORTS = 2 * (MEMBERS + 1)  # gRPC ports, then client ports


def _cluster(base: int, data_dir: Path) -> list[str]:
    return [*KAYIT, "cluster", "--members", str(MEMBERS), "--tolerance", "1",
            "--grpc-port", str(base), "--client-port", str(base + MEMBERS + 1),
            "--data-dir", str(data_dir), "--report-every", "0.5"]  # fmt: skip


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _running(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited


def _children(pid: int) -> list[int]:
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [child for child in pids if (fields := _proc_stat(child)) and int(fields[1]) == pid]


def _nodes_of(data_dir: Path) -> list[int]:
    """The running processes whose command line names ``data_dir``: its nodes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(data_dir).encode() in command and _running(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A `kayit cluster` on a run of free ports, once every member joined; its output is
    piped to the test. Killed at teardown, with whatever node it left."""
    base = free_port_run(PORTS)
    process = subprocess.Popen(
        _cluster(base, tmp_path / "a"), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(b"cluster ready"):
                break
        else:
            pytest.fail(f"kayit cluster ended before it was ready: {process.wait()}")
        yield process, base
    finally:
        process.kill()
        process.wait()
        for pid in _nodes_of(tmp_path / "a"):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.cluster
def test_a_port_taken_starts_nothing_and_says_which(tmp_path: Path) -> None:
    base = free_port_run(PORTS)
    taken = base + MEMBERS + 2  # the first member's client port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        result = subprocess.run(
            _cluster(base, tmp_path / "d"), cwd=tmp_path, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"kayit cluster: 127.0.0.1:{taken} (client port of member:{base + 1}) is in use, by "
        "another cluster perhaps: stop it, or choose other ports with --grpc-port and "
        "--client-port\n"
    )
    assert not (tmp_path / "d").exists()  # not even certificates


@pytest.mark.cluster
def test_a_leader_that_cannot_start_stops_the_cluster_with_one_line(tmp_path: Path) -> None:
    base = free_port_run(PORTS)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cluster.json").write_text("not a cluster record")
    result = subprocess.run(
        _cluster(base, tmp_path / "d"), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kayit cluster: leader:{base} exited with code 2 before"), lines
    assert "cluster.json" in lines[0]
    assert "Traceback" not in result.stdout
    assert _nodes_of(tmp_path / "d") == []
    assert all(port_is_free("127.0.0.1", port) for port in range(base, base + PORTS))


@pytest.mark.cluster
def test_a_second_cluster_on_the_same_ports_starts_nothing_and_sigkill_takes_the_nodes(
    tmp_path: Path, started: tuple[subprocess.Popen[bytes], int]
) -> None:
    first, base = started
    nodes = _children(first.pid)
    assert len(nodes) == MEMBERS + 1
    second = subprocess.run(
        _cluster(base, tmp_path / "b"), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 1
    assert second.stderr.startswith(f"kayit cluster: 127.0.0.1:{base} (gRPC port of leader:")
    assert second.stderr.count("\n") == 1
    assert _nodes_of(tmp_path / "b") == []
    assert all(_running(pid) for pid in nodes), "the first cluster's nodes were disturbed"

    first.send_signal(signal.SIGKILL)
    first.wait()
    wait_for(lambda: not any(_running(pid) for pid in nodes), 5, "its nodes to die with it")
    wait_for(
        lambda: all(port_is_free("127.0.0.1", port) for port in range(base, base + PORTS)),
        5,
        "its ports to be free",
    )


@pytest.mark.cluster
def test_a_closed_output_leaves_the_cluster_running_without_a_traceback(
    started: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, base = started
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `kayit cluster | head -1` does once it has its line
    # The next report (every 0.5 s) finds the pipe closed; a traceback would come here too.
    assert process.stderr.readline().decode() == (
        "kayit cluster: standard output was closed; the nodes run on and what they say is "
        "dropped (Ctrl-C or SIGTERM stops them)\n"
    )
    with KayitClient("127.0.0.1", base + MEMBERS + 1, timeout=10) as client:
        assert client.set("after", "closed") == b"OK"
        assert client.get("after") == b"closed"
    assert process.poll() is None
    nodes = _children(process.pid)
    assert len(nodes) == MEMBERS + 1
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 0
    assert errors == b""
    assert not any(_running(pid) for pid in nodes)
