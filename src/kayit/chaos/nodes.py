"""The chaos run's nodes: real ``kayit node`` processes that the nemesis kills, pauses and
restarts by PID, each on its own address of the run's network."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

from kayit.chaos.network import Network
from kayit.local_cluster import ClusterPlan
from kayit.rpc.status import fetch_status

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: if the harness dies (even by SIGKILL), so does the node, so no
    run leaves orphans behind. Loaded before fork: the child only makes the call."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ChaosNode:
    def __init__(self, number: int, name: str, argv: list[str], log_path: Path) -> None:
        self.number = number  # 0 is the leader
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
            *self.argv, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip

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
    """A leader (node 0) and members, started from one ClusterPlan on a Network."""

    def __init__(self, plan: ClusterPlan, network: Network, log_dir: Path) -> None:
        self.plan = plan
        self.network = network
        log_dir.mkdir(parents=True, exist_ok=True)
        python = [sys.executable, "-u", "-m", "kayit", "node"]
        self.nodes = [
            ChaosNode(n, name, network.wrap(n, [*python, *argv]), log_dir / f"node-{n}.log")
            for n, (name, argv) in enumerate(plan.node_commands())
        ]

    @property
    def leader(self) -> ChaosNode:
        return self.nodes[0]

    @property
    def members(self) -> list[ChaosNode]:
        return self.nodes[1:]

    @property
    def client_address(self) -> tuple[str, int]:
        return self.plan.host(0), self.plan.client_port

    def grpc_address(self, node: int) -> str:
        return f"{self.plan.host(node)}:{self.plan.grpc_port + node}"

    def messages_dir(self, node: int) -> Path:
        return self.plan.data_dir / f"node-{self.plan.grpc_port + node}" / "messages"

    async def start(self, timeout: float = 30) -> None:
        await self.leader.start()
        await self.wait_client_port(timeout)
        for member in self.members:
            await member.start()
        await self.wait_whole(timeout)

    async def restart(self, node: ChaosNode, timeout: float = 30) -> None:
        await node.start()
        if node is self.leader:
            await self.wait_client_port(timeout)

    async def wait_client_port(self, timeout: float) -> None:
        host, port = self.client_address
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError as error:
                if time.monotonic() > deadline:
                    message = f"the leader's client port {host}:{port} did not open"
                    raise TimeoutError(message) from error
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return

    async def wait_whole(self, timeout: float) -> None:
        """Until the leader sees every member alive."""
        deadline = time.monotonic() + timeout
        while await self.members_alive() < len(self.members):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {await self.members_alive()} members alive")
            await asyncio.sleep(0.1)

    async def members_alive(self) -> int:
        try:
            status = await asyncio.to_thread(fetch_status, self.grpc_address(0), 1.0)
        except ConnectionError:
            return 0
        return sum(1 for member in status.members if member.alive)

    def crashed(self) -> list[ChaosNode]:
        """Nodes that exited without being killed by the harness."""
        return [n for n in self.nodes if n.process is not None and not n.running and not n.killed]

    def tracebacks(self) -> list[str]:
        """The first line after each traceback in the nodes' logs: errors nobody handled."""
        found = []
        for node in self.nodes:
            lines = node.log_path.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines):
                if line.startswith("Traceback"):
                    after = next((x for x in lines[number + 1 :] if not x.startswith(" ")), "")
                    found.append(f"{node.name}: traceback in its log: {after[:160]}")
        return found

    async def close(self) -> None:
        for node in self.nodes:
            await node.kill()
            node.close()


def remove_leader_messages(cluster: ChaosCluster) -> int:
    """Delete the leader's message files (not its journal): every read must then be served by
    a member. Returns how many were deleted."""
    removed = 0
    for path in cluster.messages_dir(0).glob("*.msg"):
        os.unlink(path)
        removed += 1
    return removed
