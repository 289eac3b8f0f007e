"""The chaos run's nodes: real ``kayit node`` processes that the nemesis kills, pauses and
restarts by PID, each on its own address of the run's network. Node 0 forms the cluster; Raft
elects whichever node leads, so who leads is asked of the nodes, never assumed."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kayit.chaos.network import Network
from kayit.children import SETPRIV, can_die_with_parent, dying_with_parent
from kayit.local_cluster import ClusterPlan
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.status import fetch_status

# A fatal line of gRPC's core logging (glog style): F, month and day, time, thread, source.
_GRPC_FATAL = re.compile(r"F\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]")
_STATUS_TIMEOUT = 1.0  # a paused node never answers: asking it must not hold the nemesis up


@dataclass(frozen=True, slots=True)
class Leading:
    node: int
    term: int


def leader_of(replies: Mapping[int, pb.StatusReply], addresses: Sequence[str]) -> Leading | None:
    """Who leads now, by the Status replies of the nodes that answered (by node number) and
    the nodes' gRPC addresses. Only the highest term any reply knows counts, so a deposed
    leader that has not heard of its successor yet is not taken for the leader; in that term,
    a node that says it leads, else the one leader address its followers name (the leader may
    be too busy to answer). None while that term has no leader: an election is under way."""
    if not replies:
        return None
    term = max(reply.term for reply in replies.values())
    current = {node: reply for node, reply in replies.items() if reply.term == term}
    for node, reply in sorted(current.items()):
        if reply.role == "leader":
            return Leading(node, term)
    named = {reply.leader_address for reply in current.values() if reply.leader_address}
    if len(named) == 1 and (address := named.pop()) in addresses:
        return Leading(list(addresses).index(address), term)
    return None


class ChaosNode:
    def __init__(self, number: int, name: str, argv: list[str], log_path: Path) -> None:
        self.number = number  # 0 forms the cluster; after that it is a node like the others
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.paused = False
        self.killed = False  # by the harness, on purpose
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        if self._log is None:
            self._log = self.log_path.open("ab")
        self.killed = False
        self.process = await asyncio.create_subprocess_exec(
            *dying_with_parent(self.argv), stdout=self._log, stderr=asyncio.subprocess.STDOUT
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        self.paused = False
        self.killed = True

    def pause(self) -> None:
        if self.running and not self.paused:
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.running and self.paused:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class ChaosCluster:
    """The nodes of one ClusterPlan on a Network: node 0 forms the cluster, the others join it."""

    def __init__(self, plan: ClusterPlan, network: Network, log_dir: Path) -> None:
        # If the harness dies (even by SIGKILL), so does each node: no run leaves orphans.
        if not can_die_with_parent():
            raise RuntimeError(f"`{SETPRIV}` is not installed: apt-get install util-linux")
        self.plan = plan
        self.network = network
        plan.make_certificates()
        self._tls = plan.tool_identity()
        log_dir.mkdir(parents=True, exist_ok=True)
        python = [sys.executable, "-u", "-m", "kayit", "node"]
        # Named by number and gRPC port: the plan's "leader"/"member" names only say how each
        # node enters the cluster, not which one leads.
        self.nodes = [
            ChaosNode(
                n,
                f"node{n}:{plan.grpc_port + n}",
                network.wrap(n, [*python, *argv]),
                log_dir / f"node-{n}.log",
            )
            for n, (_, argv) in enumerate(plan.node_commands())
        ]

    @property
    def client_addresses(self) -> list[tuple[str, int]]:
        """Each node's own client port: any node takes clients and forwards to the leader."""
        return [(self.plan.host(n), self.plan.node_client_port(n)) for n in range(len(self.nodes))]

    def grpc_address(self, node: int) -> str:
        return f"{self.plan.host(node)}:{self.plan.grpc_port + node}"

    def messages_dir(self, node: int) -> Path:
        return self.plan.data_dir / self.plan.node_name(node) / "messages"

    async def start(self, timeout: float = 30) -> None:
        first, *others = self.nodes
        await self.restart(first, timeout)  # the others join through it: it must listen first
        for node in others:
            await node.start()
        await self.wait_whole(timeout)

    async def restart(self, node: ChaosNode, timeout: float = 30) -> None:
        await node.start()
        await self.wait_client_port(node, timeout)

    async def wait_client_port(self, node: ChaosNode, timeout: float) -> None:
        host, port = self.client_addresses[node.number]
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError as error:
                if time.monotonic() > deadline:
                    message = f"{node.name}'s client port {host}:{port} did not open"
                    raise TimeoutError(message) from error
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    async def wait_whole(self, timeout: float) -> None:
        """Until the node that leads, whichever it is, sees every other node alive."""
        deadline = time.monotonic() + timeout
        while await self.others_alive() < len(self.nodes) - 1:
            if time.monotonic() > deadline:
                alive = await self.others_alive()
                raise TimeoutError(f"the leader sees only {alive} other nodes alive")
            await asyncio.sleep(0.1)

    async def others_alive(self) -> int:
        """How many other nodes the node that leads now counts alive; 0 if none leads."""
        for node in range(len(self.nodes)):
            try:
                status = await asyncio.to_thread(
                    fetch_status, self.grpc_address(node), 1.0, self._tls
                )
            except ConnectionError:
                continue
            if status.role == "leader":
                return sum(1 for member in status.members if member.alive)
        return 0

    async def leading(self) -> Leading | None:
        """The node that leads now, asking every node at once; None during an election."""

        async def ask(node: int) -> pb.StatusReply | None:
            address = self.grpc_address(node)
            try:
                return await asyncio.to_thread(fetch_status, address, _STATUS_TIMEOUT, self._tls)
            except ConnectionError:
                return None  # killed, paused or restarting

        numbers = range(len(self.nodes))
        answers = await asyncio.gather(*(ask(node) for node in numbers))
        replies = {
            node: reply for node, reply in zip(numbers, answers, strict=True) if reply is not None
        }
        return leader_of(replies, [self.grpc_address(node) for node in numbers])

    def crashed(self) -> list[ChaosNode]:
        """Nodes that exited without being killed by the harness."""
        return [n for n in self.nodes if n.process is not None and not n.running and not n.killed]

    def tracebacks(self) -> list[str]:
        """The first line after each traceback in the nodes' logs, and each fatal error of
        gRPC's core (``F<date> ... Check failed``, then abort): errors nobody handled."""
        found = []
        for node in self.nodes:
            lines = node.log_path.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines):
                if line.startswith("Traceback"):
                    after = next((x for x in lines[number + 1 :] if not x.startswith(" ")), "")
                    found.append(f"{node.name}: traceback in its log: {after[:160]}")
                elif _GRPC_FATAL.match(line):
                    found.append(f"{node.name}: fatal error in its log: {line[:160]}")
        return found

    async def close(self) -> None:
        for node in self.nodes:
            await node.kill()
            node.close()


def remove_messages(cluster: ChaosCluster, node: ChaosNode) -> int:
    """Delete a node's committed message files (not its Raft log or pending copies): reads must
    then be served by the other holders, and repair must copy them again. Returns how many
    were deleted."""
    removed = 0
    for path in cluster.messages_dir(node.number).glob("*.msg"):
        os.unlink(path)
        removed += 1
    return removed
