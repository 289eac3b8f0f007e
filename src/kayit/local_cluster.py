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

from kayit.children import SETPRIV, can_die_with_parent, dying_with_parent
from kayit.cluster.identity import NODE_ID_FILE
from kayit.cluster.record import read_record
from kayit.config import METRICS_PORT_OFFSET, node_name
from kayit.rpc.status import fetch_status
from kayit.server.ports import port_is_free
from kayit.tls.command import TLS_SUBDIR
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN, CA_CERT, NODE_CERT

_STOP_GRACE = 5.0
_LEADER_START = 30.0
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
    # Node i serves metrics and the dashboard on metrics_port + i, and stops if it is taken;
    # 0: none. None: each node's own default, its gRPC port + 2222 (given up if taken).
    metrics_port: int | None = None
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

    def node_metrics_port(self, node: int) -> int:
        """The metrics port of node ``node``; 0 for none."""
        if self.metrics_port is None:
            return self.grpc_port + node + METRICS_PORT_OFFSET
        return self.metrics_port + node if self.metrics_port else 0

    def address(self, node: int) -> str:
        """The gRPC address of node ``node`` (0 is the leader)."""
        return f"{self.host(node)}:{self.grpc_port + node}"

    def ports(self) -> list[tuple[str, int, str]]:
        """(host, port, what it is) of every port the nodes listen on."""
        ports = []
        for n, (name, _) in enumerate(self.node_commands()):
            ports.append((self.host(n), self.grpc_port + n, f"gRPC port of {name}"))
            ports.append((self.host(n), self.node_client_port(n), f"client port of {name}"))
            if self.metrics_port:  # a default one that is taken is given up, not fatal
                metrics = self.node_metrics_port(n)
                ports.append(("127.0.0.1", metrics, f"metrics port of {name}"))
        return ports

    def node_commands(self) -> list[tuple[str, list[str]]]:
        """(name, argv) of each node: the leader on grpc_port, members on the ports after it;
        node i has client port client_port + i and shares client_port with the others. Each
        is given every other node as --peers: restarted with the same command after it lost
        its state, a node asks them to admit it (the leader too, rather than form a cluster
        while another runs)."""
        common = [
            # Every setting of a node is on its command line: no kayit.toml [node] table or
            # KAYIT_* variable of the cluster's working directory and environment reaches it.
            "--no-config",
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
            if self.metrics_port is not None:
                argv += ["--metrics-port", str(self.node_metrics_port(n))]
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


class ClusterError(Exception):
    """kayit cluster cannot start its cluster; the message says why, on one line."""


def check_ports(plan: ClusterPlan) -> None:
    """Refuse to start anything when the ports the nodes need are taken: by another cluster,
    most likely, whose leader the members would join instead of this one's."""
    ports = plan.ports()
    seen: dict[tuple[str, int], str] = {}
    for host, port, what in ports:
        if (host, port) in seen:
            raise ClusterError(
                f"{host}:{port} would be both {seen[host, port]} and {what}: choose "
                "--grpc-port and --client-port further apart"
            )
        seen[host, port] = what
    taken = [
        f"{host}:{port} ({what})" for host, port, what in ports if not port_is_free(host, port)
    ]
    if taken:
        verb = "is" if len(taken) == 1 else "are"
        raise ClusterError(
            f"{', '.join(taken)} {verb} in use, by another cluster perhaps: stop it, or choose "
            "other ports with --grpc-port and --client-port"
        )


class Output:
    """The cluster's standard output, which its reader may close (``kayit cluster | head -1``):
    from then on what the nodes say is dropped, and they run on until Ctrl-C or SIGTERM, as
    if nobody were reading."""

    def __init__(self) -> None:
        self.closed = False

    def line(self, text: str) -> None:
        if self.closed:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self.closed = True
            # The buffered rest, later lines and the flush at exit must go somewhere.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            with contextlib.suppress(OSError):
                print(
                    "kayit cluster: standard output was closed; the nodes run on and what they "
                    "say is dropped (Ctrl-C or SIGTERM stops them)",
                    file=sys.stderr,
                    flush=True,
                )


class _Started:
    """A node process kayit cluster started, and the task printing what it says."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, output: Output) -> None:
        self.name = name
        self.process = process
        self.last_line = ""
        self.pump = asyncio.create_task(self._pump(output))

    async def _pump(self, output: Output) -> None:
        """Print the node's output with its name in front (in a JSON log line: as its
        "node"); say so if it exits on its own."""
        stdout = self.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            self.last_line = line.decode(errors="replace").rstrip()
            output.line(named_line(self.name, self.last_line))
        code = await self.process.wait()
        output.line(f"[{self.name}] exited with code {code}")


async def run_cluster(plan: ClusterPlan) -> int:
    """Start the nodes of ``plan`` and run until SIGTERM or SIGINT; raises ClusterError, with
    every node it started stopped, if its leader cannot start."""
    check_ports(plan)
    plan.make_certificates()
    output = Output()
    # From the first node on: a SIGTERM while they start must stop them too, not orphan them.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    _banner(plan, output)
    if not can_die_with_parent():
        output.line(f"note: {SETPRIV} (util-linux) is missing: killed, this leaves its nodes")
    started: list[_Started] = []
    try:
        for position, (name, arguments) in enumerate(plan.node_commands()):
            started.append(await _start(name, arguments, output))
            if position == 0:  # the members must find this leader, and no other
                await _until_leader_ready(plan, started[0], stopping)
            if stopping.is_set():
                break
    except BaseException:
        await _stop_all(started)
        raise
    announcing = asyncio.create_task(_announce_ready(plan, output))
    await asyncio.wait(
        [announcing, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    announcing.cancel()
    if plan.members < plan.tolerance and not stopping.is_set():
        output.line(
            f"note: {plan.members} members cannot hold TOLERANCE={plan.tolerance} copies; "
            "every SET will answer ERROR"
        )
    await stopping.wait()
    output.line("stopping every node ...")
    await _stop_all(started)
    output.line("all nodes stopped")
    return 0


async def _start(name: str, arguments: list[str], output: Output) -> _Started:
    argv = [sys.executable, "-u", "-m", "kayit", "node", *arguments]
    process = await asyncio.create_subprocess_exec(
        *(dying_with_parent(argv) if can_die_with_parent() else argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return _Started(name, process, output)


async def _until_leader_ready(plan: ClusterPlan, leader: _Started, stopping: asyncio.Event) -> None:
    """Until the leader, the very process started (not another node on its port), answers,
    and DATA_DIR holds a cluster record (made by the leader once it formed its cluster, or
    there from an earlier run): a member of DATA_DIR then asks to be admitted to that cluster
    only, and is refused by any other. Returns early on SIGTERM; raises ClusterError if the
    leader exits or does not get there in time."""
    tls = plan.tool_identity()
    own_id = plan.data_dir / plan.node_name(0) / "raft" / NODE_ID_FILE
    deadline = asyncio.get_running_loop().time() + _LEADER_START
    while not stopping.is_set():
        if leader.process.returncode is not None:
            await leader.pump  # its last words
            raise ClusterError(
                f"{leader.name} exited with code {leader.process.returncode} before the "
                f"cluster formed: {leader.last_line or 'it said nothing'}"
            )
        try:
            status = await asyncio.to_thread(fetch_status, plan.address(0), 1.0, tls)
        except ConnectionError:
            status = None
        if status is not None and own_id.exists():
            node_id = own_id.read_text(encoding="ascii", errors="replace").strip()
            if status.node_id != node_id:
                raise ClusterError(
                    f"{plan.address(0)} is answered by node {status.node_id}, not by the "
                    f"{leader.name} just started (node {node_id}): another process shares the "
                    "port; stop it, or choose other ports with --grpc-port and --client-port"
                )
            if await asyncio.to_thread(read_record, plan.data_dir) is not None:
                return
        if asyncio.get_running_loop().time() > deadline:
            raise ClusterError(
                f"{leader.name} did not answer as a node of its cluster within "
                f"{_LEADER_START:.0f} s; its output above says why"
            )
        await asyncio.sleep(0.1)


def _banner(plan: ClusterPlan, output: Output) -> None:
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
        f"  {plan.client_port} is shared by every node (the leader's process serves its clients),"
        " so a client that reconnects is served while any node lives",
        f"  each node's own client port: {own}",
        f"  gRPC ports {plan.grpc_port}..{last} (leader on {plan.grpc_port}): {grpc_security}",
        _metrics_line(plan),
        f"  data in {plan.data_dir.resolve()}/node-<grpc-port>/messages/",
        "  Ctrl-C stops every node",
    ]
    output.line("\n".join(lines))


def _metrics_line(plan: ClusterPlan) -> str:
    first, last = plan.node_metrics_port(0), plan.node_metrics_port(plan.members)
    if not first:
        return "  no metrics (--metrics-port 0)"
    return (
        f"  dashboard: http://127.0.0.1:{first}/   (any node's; Prometheus metrics on ports "
        f"{first}..{last}, /metrics)"
    )


async def _announce_ready(plan: ClusterPlan, output: Output) -> None:
    """Say when every member has joined, so a user knows SETs will be answered OK."""
    tls = plan.tool_identity()
    deadline = asyncio.get_running_loop().time() + _MEMBERS_JOIN
    alive = 0
    while asyncio.get_running_loop().time() < deadline:
        try:
            status = await asyncio.to_thread(fetch_status, plan.address(0), 1.0, tls)
        except ConnectionError:
            status = None
        alive = sum(1 for m in status.members if m.alive) if status else 0
        if alive >= plan.members:
            output.line(f"cluster ready: {alive} of {plan.members} members joined")
            return
        await asyncio.sleep(0.2)
    output.line(f"cluster not complete: {alive} of {plan.members} members joined so far")


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


async def _stop_all(nodes: list[_Started]) -> None:
    running = [node.process for node in nodes if node.process.returncode is None]
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
    for node in nodes:
        with contextlib.suppress(asyncio.CancelledError):
            await node.pump
