"""Real kayit node processes on loopback ports, for tests that act as users do."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import grpc

from kayit.client import KayitClient
from kayit.cluster.identity import CLUSTER_FILE, ClusterFacts
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.channels import open_tool_channel
from kayit.rpc.kayit_pb2_grpc import NodeStub
from kayit.rpc.security import cluster_metadata
from kayit.rpc.status import fetch_status
from kayit.server.ports import free_ports, port_is_free
from kayit.storage.naming import file_name
from kayit.tls.authority import init_authority, issue
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN

HEARTBEAT = 0.2
DEAD_AFTER = 1.0


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free ports on loopback (kayit cluster takes runs),
    below 32768: from there up Linux hands out the local ports of outgoing connections, and a
    test running beside this one, connecting all the time, would take one of them meanwhile."""
    start = 10000 + os.getpid() * 7 % 20000
    bases: Iterable[int] = itertools.chain(range(start, 32000 - count, 7), range(10000, start, 7))
    for base in bases:
        if all(port_is_free("127.0.0.1", port) for port in range(base, base + count)):
            return base
    raise AssertionError("no run of free ports")


def exchange(port: int, payload: bytes, replies: int, timeout: float = 10.0) -> list[bytes]:
    """Send ``payload`` to a client port in one write; return ``replies`` reply lines (fewer
    if it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.sendall(payload)
        received = b""
        while received.count(b"\n") < replies and (chunk := raw.recv(65536)):
            received += chunk
    return received.split(b"\n")[:replies]


def resp(*args: bytes) -> bytes:
    """A RESP request of ``args``, as a Redis client writes it."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class NodeProcess:
    def __init__(
        self,
        name: str,
        grpc_port: int,
        args: list[str],
        workdir: Path,
        client_port: int | None = None,
        tls: TlsIdentity | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.name = name
        self.metrics_port = metrics_port  # its /metrics and dashboard, when given one
        self.tls = tls  # the tools' identity, when the node speaks TLS
        self.grpc_port = grpc_port
        self.client_port = client_port  # its own
        self.args = args
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Its gRPC address, as ``kayit status`` lists it."""
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kayit", "node", *self.args],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 20) -> None:
        """Until the node answers on its gRPC port."""

        def answers() -> bool:
            try:
                fetch_status(f"127.0.0.1:{self.grpc_port}", timeout=1, tls=self.tls)
            except ConnectionError:
                return False
            return True

        wait_for(answers, timeout, f"{self.name} to answer")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed, nothing is said goodbye."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process stays, its sockets stay open, and nothing on it runs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def own_status(self) -> pb.StatusReply | None:
        """What this node itself says (not whoever leads); None if it does not answer."""
        try:
            return fetch_status(f"127.0.0.1:{self.grpc_port}", timeout=1, tls=self.tls)
        except ConnectionError:
            return None


def start_lone_node(workdir: Path, *flags: str) -> tuple[NodeProcess, int]:
    """A single node that forms a cluster of its own with TOLERANCE=0, started with ``flags``
    as well; returns it and its client port, once that port takes connections."""
    grpc_port, client_port = free_ports(2)
    node = NodeProcess(
        f"node-{grpc_port}",
        grpc_port,
        ["--leader", "--tolerance", "0", "--grpc-port", str(grpc_port),
         "--client-port", str(client_port), "--data-dir", str(workdir / "data"),
         "--report-every", "60", "--metrics-port", "0", *flags],
        workdir,
        client_port,
    )  # fmt: skip
    node.start()
    try:
        wait_for(lambda: port_open(client_port), 20, "the node's client port")
    except BaseException:
        node.kill()
        raise
    return node, client_port


class Cluster:
    """A leader and members started as separate ``kayit node`` processes, each with a client
    port of its own; ``client_port`` is the leader's. With ``shared_client_port`` every node
    also listens on the leader's client port (SO_REUSEPORT), as ``kayit cluster`` does. With
    ``tls``, a CA in ``workdir/tls`` and mutual TLS between all nodes and the harness."""

    def __init__(
        self,
        workdir: Path,
        *,
        tolerance: int,
        members: int,
        extra: Iterable[str] = (),
        shared_client_port: bool = False,
        tls: bool = False,
        metrics: bool = False,
    ) -> None:
        """Without ``metrics`` the nodes serve none (each node's default port, its gRPC port
        + 2222, might be a port another node of the test is given)."""
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.tolerance = tolerance
        nodes = members + 1
        ports = free_ports((3 if metrics else 2) * nodes)
        self.client_port, *member_client_ports = ports[:nodes]
        self.leader_port, *self.member_ports = ports[nodes : 2 * nodes]
        metrics_ports: list[int | None] = [*ports[2 * nodes :]] if metrics else [None] * nodes
        if shared_client_port:
            extra = [*extra, "--shared-client-port", str(self.client_port)]
        self.tls: TlsIdentity | None = None
        if tls:
            self.tls_dir = workdir / "tls"
            init_authority(self.tls_dir)
            for port in [self.leader_port, *self.member_ports]:
                issue(self.tls_dir, f"node-{port}", ["127.0.0.1", "localhost"])
            self.tls = TlsIdentity.load(self.tls_dir, ADMIN)
            extra = [*extra, "--tls-dir", str(self.tls_dir)]
        common = [
            "--data-dir", str(self.data_dir),
            "--heartbeat", str(HEARTBEAT),
            "--dead-after", str(DEAD_AFTER),
            "--rpc-timeout", "2",
            "--report-every", "60",
            # Off, so that reads exercise the disk paths; tests of the cache turn it on.
            "--cache-mb", "0",
            *extra,
        ]  # fmt: skip
        self.leader = NodeProcess(
            "leader",
            self.leader_port,
            ["--leader", "--grpc-port", str(self.leader_port),
             "--client-port", str(self.client_port), "--tolerance", str(tolerance), *common,
             *_metrics_flag(metrics_ports[0])],
            workdir,
            self.client_port,
            self.tls,
            metrics_ports[0],
        )  # fmt: skip
        self.members = {
            port: NodeProcess(
                f"member-{port}",
                port,
                ["--join", f"127.0.0.1:{self.leader_port}", "--grpc-port", str(port),
                 "--client-port", str(client_port), *common, *_metrics_flag(metrics_port)],
                workdir,
                client_port,
                self.tls,
                metrics_port,
            )
            for port, client_port, metrics_port in zip(
                self.member_ports, member_client_ports, metrics_ports[1:], strict=True
            )
        }  # fmt: skip

    @property
    def nodes(self) -> list[NodeProcess]:
        return [self.leader, *self.members.values()]

    def start(self) -> Cluster:
        self.leader.start()
        wait_for(self.client_port_open, 20, "the leader's client port")
        for member in self.members.values():
            member.start()
        self.wait_alive(len(self.members))
        self.wait_voters()
        return self

    def wait_voters(self, timeout: float = 20) -> None:
        """Until the nodes vote as the leader wants them to: all of them up to 2T+1."""
        wanted = min(len(self.members), 2 * self.tolerance)

        def voting() -> bool:
            try:
                members = self.status().members
            except ConnectionError:
                return False
            return sum(m.voter for m in members) == wanted

        wait_for(voting, timeout, f"{wanted} other voters")

    def close(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.kill()

    def client_port_open(self) -> bool:
        return port_open(self.client_port)

    def client(self, port: int | None = None) -> KayitClient:
        """A client of the leader's client port, or of ``port``."""
        return KayitClient("127.0.0.1", self.client_port if port is None else port)

    def followers(self) -> list[NodeProcess]:
        """The nodes that do not lead now."""
        leading = self.status().address
        return [node for node in self.nodes if node.address != leading]

    def status(self) -> pb.StatusReply:
        """The status of the node that leads now, whichever it is; ConnectionError if no
        running node knows of a live leader."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                status = fetch_status(f"127.0.0.1:{node.grpc_port}", timeout=1, tls=self.tls)
                if status.role != "leader" and status.leader_address:
                    status = fetch_status(status.leader_address, timeout=1, tls=self.tls)
            except ConnectionError:
                continue
            if status.role == "leader":
                return status
        raise ConnectionError("no running node knows of a live leader")

    def leader_grpc_port(self) -> int:
        return int(self.status().address.rsplit(":", 1)[1])

    def alive_members(self) -> set[int]:
        try:
            status = self.status()
        except ConnectionError:
            return set()
        return {int(m.address.rsplit(":", 1)[1]) for m in status.members if m.alive}

    def wait_alive(self, count: int, timeout: float = 20) -> None:
        wait_for(lambda: len(self.alive_members()) == count, timeout, f"{count} live members")

    def node_dir(self, port: int) -> Path:
        return self.data_dir / f"node-{port}"

    def messages_dir(self, port: int) -> Path:
        return self.data_dir / f"node-{port}" / "messages"

    def message_files(self, port: int) -> set[str]:
        """The names of the committed copies in the node's messages/."""
        return {path.name for path in self.messages_dir(port).glob("*.msg")}

    def cluster_id(self, port: int) -> str:
        """The id of the cluster the node on ``port`` is in, from its Raft dir."""
        facts = (self.node_dir(port) / "raft" / CLUSTER_FILE).read_bytes()
        return ClusterFacts.decode(facts).cluster_id

    def count_on_disk(self, port: int) -> int:
        return sum(1 for path in self.messages_dir(port).glob("*.msg"))

    def holders(self, message_id: str) -> list[int]:
        name = file_name(message_id)
        return [port for port in self.member_ports if (self.messages_dir(port) / name).exists()]

    def copies(self, message_id: str) -> dict[int, bytes]:
        """The committed copies of ``message_id`` on the running nodes, the harness's first
        node among them, by gRPC port."""
        name = file_name(message_id)
        found: dict[int, bytes] = {}
        for node in self.nodes:
            if not node.running:
                continue
            try:
                found[node.grpc_port] = (self.messages_dir(node.grpc_port) / name).read_bytes()
            except FileNotFoundError:
                continue
        return found

    def assigned(self) -> dict[int, int]:
        """The copies the committed index places on each node but the one that leads, by
        gRPC port, as that leader reports them."""
        return {int(m.address.rsplit(":", 1)[1]): m.assigned for m in self.status().members}

    def set_many(self, items: dict[str, str], chunk: int = 500) -> list[bytes]:
        """Pipelined SETs, ``chunk`` commands per write; returns the replies in order, once
        every acknowledged copy is promoted from pending on its holder (see wait_promoted)."""
        replies: list[bytes] = []
        pairs = list(items.items())
        with self.client() as client:
            for start in range(0, len(pairs), chunk):
                lines = [f"SET {k} {v}".encode() for k, v in pairs[start : start + chunk]]
                replies += client.pipeline(lines)
        self.wait_promoted([k for k, reply in zip(items, replies, strict=True) if reply == b"OK"])
        return replies

    def wait_promoted(self, ids: Iterable[str], timeout: float = 10) -> None:
        """Until no running node keeps a pending copy of ``ids`` and every running node has
        its committed copies in their messages/ files: a holder promotes its copy when it
        applies the entry that commits it, a moment after the OK, and writes its file
        behind (its backlog)."""
        wanted = set(ids)

        def promoted() -> bool:
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    pending = self.pending_ids(node.grpc_port)
                except grpc.RpcError:
                    return False
                status = node.own_status()
                if pending & wanted or status is None or status.backlog:
                    return False
            return True

        wait_for(promoted, timeout, "acknowledged copies to be promoted on their holders")

    def wait_drained(self, timeout: float = 10) -> None:
        """Until every running node has its committed copies in their messages/ files."""

        def drained() -> bool:
            statuses = [node.own_status() for node in self.nodes if node.running]
            return all(status is not None and not status.backlog for status in statuses)

        wait_for(drained, timeout, "every node's backlog to be written to its files")

    def pending_ids(self, port: int) -> set[str]:
        """The ids of the pending copies the node on ``port`` holds, from its Inventory."""
        metadata = cluster_metadata(self.cluster_id(port))
        with open_tool_channel(f"127.0.0.1:{port}", self.tls) as channel:
            chunks = NodeStub(channel).Inventory(
                pb.InventoryRequest(verify=False), metadata=metadata, timeout=5
            )
            return {entry.id for chunk in chunks for entry in chunk.entries if entry.pending}

    def misread(self, expected: Mapping[str, str | bytes]) -> list[str]:
        """The ids whose GET does not answer the expected value (pipelined GETs)."""
        replies = self.get_many(list(expected))
        wanted = [v.encode() if isinstance(v, str) else v for v in expected.values()]
        return [
            k for k, reply, want in zip(expected, replies, wanted, strict=True) if reply != want
        ]

    def get_many(self, ids: list[str], chunk: int = 500) -> list[bytes]:
        replies: list[bytes] = []
        with self.client() as client:
            for start in range(0, len(ids), chunk):
                replies += client.pipeline(
                    [f"GET {k}".encode() for k in ids[start : start + chunk]]
                )
        return replies


def _metrics_flag(port: int | None) -> list[str]:
    return ["--metrics-port", str(port if port is not None else 0)]
