"""``kayit cluster``: a leader and N members as separate local processes, for trying kayit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from kayit.config import node_name
from kayit.rpc.status import fetch_status
from kayit.tls.command import TLS_SUBDIR
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN, CA_CERT, NODE_CERT

_STOP_GRACE = 5.0
_LEADER_START = 10.0
_MEMBERS_JOIN = 20.0
PASSWORD_FILE = "client-password"  # in the data dir, when the password came on the command line


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    members: int
    tolerance: int
    client_port: int  # the leader's, and shared by every node; node i also has client_port + i
    grpc_port: int
    data_dir: Path
    fsync: str
    report_every: float
    log_level: str = "info"  # every node's --log-level
    log_format: str = "text"  # every node's --log-format
    hosts: tuple[str, ...] = ()  # the address of each node, leader first; () is all loopback
    extra: tuple[str, ...] = ()  # more `kayit node` flags, for every node
    password_file: Path | None = None  # every node's --requirepass-file
    insecure: bool = False  # every node's --insecure
    client_tls: bool = False  # every node's --client-tls (needs ``tls``)
    # Mutual TLS between the nodes, with a CA and certificates kept in DATA_DIR/tls (outside
    # every node-* dir: a node that lost its node dir still has its certificate).
    tls: bool = True

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / TLS_SUBDIR

    def tool_identity(self) -> TlsIdentity | None:
        """What a tool shows the nodes: the admin certificate, with TLS on."""
        return TlsIdentity.load(self.tls_dir, ADMIN) if self.tls else None

    def make_certificates(self) -> None:
        """The CA, if DATA_DIR has none yet, and a certificate for each node that lacks one,
        valid for the address it listens on."""
        if not self.tls:
            return
        from kayit.tls.authority import init_authority, issue

        if not (self.tls_dir / CA_CERT).exists():
            init_authority(self.tls_dir)
        for n in range(self.members + 1):
            name = self.node_name(n)
            if not (self.tls_dir / name / NODE_CERT).exists():
                issue(self.tls_dir, name, [self.host(n), "localhost"])

    def node_name(self, node: int) -> str:
        """Its node dir's name, and its certificate's."""
        return node_name(self.grpc_port + node)

    def host(self, node: int) -> str:
        """The address node ``node`` (0 is the leader) listens on."""
        return self.hosts[node] if self.hosts else "127.0.0.1"

    def node_client_port(self, node: int) -> int:
        """The client port of node ``node`` (0 is the leader) alone."""
        return self.client_port + node

    def address(self, node: int) -> str:
        """The gRPC address of node ``node`` (0 is the leader)."""
        return f"{self.host(node)}:{self.grpc_port + node}"

    def node_commands(self) -> list[tuple[str, list[str]]]:
        """(name, argv) of each node: the leader on grpc_port, members on the ports after it;
        node i has client port client_port + i and shares client_port with the others. Each
        is given every other node as --peers: restarted with the same command after it lost
        its state, a node asks them to admit it (the leader too, rather than form a cluster
        while another runs)."""
        common = [
            "--shared-client-port", str(self.client_port),
            "--data-dir", str(self.data_dir),
            "--fsync", self.fsync,
            "--report-every", str(self.report_every),
            "--log-level", self.log_level,
            "--log-format", self.log_format,
            *self.extra,
        ]  # fmt: skip
        if self.password_file is not None:
            common += ["--requirepass-file", str(self.password_file)]
        if self.insecure:
            common.append("--insecure")
        if self.client_tls:
            common.append("--client-tls")
        nodes: list[tuple[str, list[str]]] = []
        for n in range(self.members + 1):
            port = self.grpc_port + n
            others = ",".join(self.address(m) for m in range(self.members + 1) if m != n)
            argv = ["--host", self.host(n), "--grpc-port", str(port),
                    "--client-port", str(self.node_client_port(n))]  # fmt: skip
            if self.tls:
                argv += ["--tls-dir", str(self.tls_dir), "--tls-name", self.node_name(n)]
            if others:
                argv += ["--peers", others]
            if n == 0:
                leader = ["--leader", *argv, "--tolerance", str(self.tolerance), *common]
                nodes.append((f"leader:{port}", leader))
            else:
                nodes.append((f"member:{port}", [*argv, *common]))
        return nodes


def save_password(data_dir: Path, password: bytes) -> Path:
    """Write the client password where the nodes read it (``--requirepass-file``), so that it
    never shows in their command lines; readable by its owner only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PASSWORD_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # the file may have been there with other rights
        os.write(descriptor, password + b"\n")
    finally:
        os.close(descriptor)
    return path


async def run_cluster(plan: ClusterPlan) -> int:
    plan.make_certificates()
    # From the first node on: a SIGTERM while they start must stop them too, not orphan them.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    processes: list[tuple[str, asyncio.subprocess.Process]] = []
    for position, (name, arguments) in enumerate(plan.node_commands()):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-u", "-m", "kayit", "node", *arguments,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        processes.append((name, process))
        if position == 0:  # members find a listening leader instead of retrying
            await _wait_for_port(plan.grpc_port, _LEADER_START)
    _banner(plan)
    pumps = [asyncio.create_task(_pump(name, process)) for name, process in processes]
    announcing = asyncio.create_task(_announce_ready(plan))
    await asyncio.wait(
        [announcing, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    announcing.cancel()
    if plan.members < plan.tolerance and not stopping.is_set():
        print(
            f"note: {plan.members} members cannot hold TOLERANCE={plan.tolerance} copies; "
            "every SET will answer ERROR",
            flush=True,
        )
    await stopping.wait()
    print("stopping every node ...", flush=True)
    await _stop_all(processes)
    for pump in pumps:
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    print("all nodes stopped", flush=True)
    return 0


def _banner(plan: ClusterPlan) -> None:
    last = plan.grpc_port + plan.members
    own = ", ".join(
        f"{name} -> {plan.node_client_port(n)}" for n, (name, _) in enumerate(plan.node_commands())
    )
    auth = "AUTH <password>, " if plan.password_file is not None else ""
    grpc_security = (
        f"mutual TLS, certificates in {plan.tls_dir}/ (kayit status finds them)"
        if plan.tls
        else "plain, loopback only"
    )
    lines = [
        f"kayit cluster: 1 leader + {plan.members} members, TOLERANCE={plan.tolerance}",
        f"  clients connect to 127.0.0.1:{plan.client_port}   (try: nc 127.0.0.1 "
        f"{plan.client_port}, then {auth}SET 1 hello / GET 1)",
        f"  every node serves clients and forwards to the leader; {plan.client_port} is shared "
        "by all of them, so a client that reconnects is served while any node lives",
        f"  each node's own client port: {own}",
        f"  gRPC ports {plan.grpc_port}..{last} (leader on {plan.grpc_port}): {grpc_security}",
        f"  data in {plan.data_dir.resolve()}/node-<grpc-port>/messages/",
        "  Ctrl-C stops every node",
    ]
    print("\n".join(lines), flush=True)


async def _announce_ready(plan: ClusterPlan) -> None:
    """Say when every member has joined, so a user knows SETs will be answered OK."""
    address = f"127.0.0.1:{plan.grpc_port}"
    tls = plan.tool_identity()
    deadline = asyncio.get_running_loop().time() + _MEMBERS_JOIN
    alive = 0
    while asyncio.get_running_loop().time() < deadline:
        try:
            status = await asyncio.to_thread(fetch_status, address, 1.0, tls)
        except ConnectionError:
            status = None
        alive = sum(1 for m in status.members if m.alive) if status else 0
        if alive >= plan.members:
            print(f"cluster ready: {alive} of {plan.members} members joined", flush=True)
            return
        await asyncio.sleep(0.2)
    print(f"cluster not complete: {alive} of {plan.members} members joined so far", flush=True)


async def _wait_for_port(port: int, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def _pump(name: str, process: asyncio.subprocess.Process) -> None:
    """Print a node's output with its name in front (in a JSON log line: as its "node"); say
    so if it exits on its own."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        print(named_line(name, line.decode(errors="replace").rstrip()), flush=True)
    code = await process.wait()
    print(f"[{name}] exited with code {code}", flush=True)


def named_line(name: str, line: str) -> str:
    """A line of node ``name``'s output as kayit cluster prints it."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            return json.dumps({"node": name, **entry})
    return f"[{name}] {line}"


async def _stop_all(processes: list[tuple[str, asyncio.subprocess.Process]]) -> None:
    running = [process for _, process in processes if process.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), _STOP_GRACE)
    except TimeoutError:
        for process in running:
            if process.returncode is None:
                process.kill()
        await asyncio.gather(*(p.wait() for p in running))
