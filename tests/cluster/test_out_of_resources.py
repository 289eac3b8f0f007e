"""A real node that runs out of file descriptors: its sync of every second fails while it has
none, says so in its status, and syncs again once clients let go; it answers clients
afterwards, keeps what it held, and SIGTERM still stops it cleanly."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest

from kayit.client import KayitClient
from kayit.cluster_status import cluster_status
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.kayit_pb2_grpc import NodeStub
from tests.cluster.harness import start_lone_node, wait_for

SPARE_FDS = 8  # descriptors the node may open past those it holds at rest
FLOOD = 64  # client connections that take them all, and more wait to be accepted


@contextmanager
def connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` client connections that send nothing, closed at the end."""
    with ExitStack() as stack:
        opened = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.setblocking(False)
            # The kernel completes the handshake whether or not the node accepts.
            sock.connect_ex(("127.0.0.1", port))
            opened.append(sock)
        yield opened


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_a_node_out_of_file_descriptors_syncs_again_answers_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    node, client_port = start_lone_node(
        tmp_path, "--shared-client-port", "0", "--fsync", "everysec", "--heartbeat", "0.2"
    )
    try:
        node.wait_ready()
        assert node.process is not None
        pid = node.process.pid
        # Opened before the node runs out, and kept: a new connection could not be accepted.
        with (
            grpc.insecure_channel(node.address) as channel,
            KayitClient("127.0.0.1", client_port) as client,
        ):
            stub = NodeStub(channel)

            def status() -> pb.StatusReply:
                reply: pb.StatusReply = stub.Status(pb.StatusRequest(), timeout=5)
                return reply

            wait_for(lambda: status().role == "leader", 20, "the node to lead")
            assert client.set("before", "kept") == b"OK"
            assert status().disk_sync_failures == 0
            # The node runs under prlimit from here: a few descriptors more than it holds.
            held = len(os.listdir(f"/proc/{pid}/fd"))
            subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={held + SPARE_FDS}"], check=True)

            # A SET leaves its file to the next sync; the connections then take every
            # descriptor left. The sync may run between the two, with nothing to sync and
            # nothing to fail: the episode is tried again then.
            for attempt in range(5):
                assert client.set(f"dirty{attempt}", "x") == b"OK"
                with connections(client_port, FLOOD):
                    try:
                        wait_for(lambda: status().disk_sync_failures > 0, 3, "a failed sync")
                    except AssertionError:
                        continue
                    failing = status()
                    assert "Too many open files" in failing.disk_sync_error
                    shown = cluster_status(failing, failing, {})  # as kayit status shows it
                    assert any(
                        "disk sync FAILING:" in problem
                        and "[Errno 24] Too many open files" in problem
                        for problem in shown.problems
                    )
                    # Still serving the connections it has.
                    assert client.get("before") == b"kept"
                break
            else:
                pytest.fail("the node's sync never ran out of file descriptors")

            # The connections are gone: the next sync succeeds, and syncs what it missed.
            wait_for(lambda: status().disk_sync_error == "", 10, "a good sync")
            assert status().disk_sync_failures >= failing.disk_sync_failures
        with KayitClient("127.0.0.1", client_port) as fresh:
            assert fresh.set("after", "set after") == b"OK"
            assert fresh.get("after") == b"set after"
            assert fresh.get("before") == b"kept"
        assert node.stop() == 0
        log = node.log()
        # What runs out is the writing of the message files behind the copy log (the logs
        # themselves keep their descriptors); the sync of every second may fail as well.
        assert "writing message files failed: [Errno 24] Too many open files" in log
        assert "writing message files works again" in log
        assert "restarting it" not in log  # the sync's own loop coped, nothing died
        # No traceback through kayit's code. (asyncio's accept in Python 3.11 logs one for each
        # accept that failed, and for its retries after the port closed: cpython#151615.)
        assert re.search(r'File ".*/kayit/', log) is None
    finally:
        node.kill()
