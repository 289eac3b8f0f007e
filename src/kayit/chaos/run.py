"""One chaos run: start a cluster, load it while the nemesis injects faults, heal, read every
key back (once more after the node that leads lost its message files), then check the history
and report."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kayit.chaos.checker import check, lost_writes
from kayit.chaos.history import HistoryWriter, Op, pair, read_events
from kayit.chaos.nemesis import Fault, FaultKind, Nemesis, Schedule
from kayit.chaos.network import Loopback, Namespaces, Network
from kayit.chaos.nodes import ChaosCluster, remove_messages
from kayit.chaos.report import RunSummary, render
from kayit.chaos.workload import Clients, Workload
from kayit.config import DEFAULT_CLIENT_PORT, DEFAULT_GRPC_PORT
from kayit.local_cluster import ClusterPlan
from kayit.server.ports import port_is_free

# Faults of a few seconds must be noticed: faster death and repair than a node's defaults.
# The heartbeat is the Raft tick: elections after 2-4 s of silence, above the pauses that five
# nodes and the load cause on two shared cores (a shorter one brings spurious elections).
NODE_FLAGS = (
    "--heartbeat", "0.2", "--dead-after", "2", "--repair-after", "4",
    "--rpc-timeout", "2", "--report-every", "60",
)  # fmt: skip
_FINAL_PROCESS = 1_000_000  # process numbers of the final reads, apart from the workers'
_HEAL_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    seconds: float
    workload: Workload
    members: int
    tolerance: int
    faults: frozenset[FaultKind]
    network: str  # "netns" or "loopback"
    seed: int
    out: Path
    fsync: str = "always"
    final_wipe: bool = True  # read everything again after the leading node lost its files


async def run_chaos(settings: ChaosSettings) -> int:
    """Returns the exit code: 0 when nothing was lost, every key is linearizable and every
    node lived through it (no crash of its own, no traceback in its log)."""
    main = asyncio.current_task()
    assert main is not None
    # SIGTERM stops the run as Ctrl-C does: the nodes are stopped and the namespaces removed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    run_dir = settings.out / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    nodes = settings.members + 1
    network: Network = Namespaces(nodes) if settings.network == "netns" else Loopback()
    data_dir = Path(tempfile.mkdtemp(prefix="kayit-chaos-"))
    problems: list[str] = []
    faults: list[Fault] = []
    history_path = run_dir / "history.jsonl"
    origin = time.monotonic()
    nemesis: Nemesis | None = None
    try:
        cluster = ChaosCluster(_plan(settings, network, data_dir), network, run_dir / "logs")
        print(f"chaos: starting {nodes} nodes, logs in {run_dir / 'logs'}", flush=True)
        try:
            await cluster.start()
            origin = time.monotonic()
            nemesis = Nemesis(
                cluster,
                Schedule(kinds=settings.faults, budget=settings.tolerance),
                random.Random(settings.seed),
            )
            faults = nemesis.faults
            with history_path.open("w", encoding="utf-8") as stream:
                clients = Clients(
                    settings.workload,
                    cluster.client_addresses,
                    HistoryWriter(stream),
                    settings.seed,
                )
                await _load_and_break(settings, cluster, nemesis, clients)
        except TimeoutError as error:
            problems.append(f"the cluster did not heal: {error}")
        finally:
            problems += nemesis.problems if nemesis is not None else []
            problems += [f"{node.name} exited by itself" for node in cluster.crashed()]
            await cluster.close()
            problems += cluster.tracebacks()
    finally:
        network.close()
        shutil.rmtree(data_dir, ignore_errors=True)

    ops = pair(read_events(history_path)) if history_path.exists() else []
    summary = _judge(settings, ops, faults, problems, origin)
    text = render(summary)
    (run_dir / "report.txt").write_text(text, encoding="utf-8")
    faults_json = [fault.as_json(origin) for fault in faults]
    (run_dir / "faults.json").write_text(json.dumps(faults_json, indent=1), encoding="utf-8")
    print(text, end="")
    _chart(summary, settings.workload.workers, run_dir / "timeline.png")
    print(f"history, report, chart and node logs: {run_dir}", flush=True)
    return 0 if summary.passed else 1


async def _load_and_break(
    settings: ChaosSettings, cluster: ChaosCluster, nemesis: Nemesis, clients: Clients
) -> None:
    stop = asyncio.Event()
    load = asyncio.create_task(clients.run(stop))
    print(f"chaos: {settings.seconds:.0f} s of load and faults", flush=True)
    try:
        await nemesis.run(until=time.monotonic() + settings.seconds)
    finally:
        stop.set()
        await load
    print("chaos: every fault healed; waiting for the cluster to be whole", flush=True)
    await cluster.wait_whole(_HEAL_TIMEOUT)
    await clients.read_all(_FINAL_PROCESS)
    if settings.final_wipe:
        leading = await cluster.leading()  # wait_whole has just seen one lead
        node = cluster.nodes[0 if leading is None else leading.node]
        await node.kill()
        removed = remove_messages(cluster, node)
        print(f"chaos: {node.name} restarted without its {removed} message files; reading again")
        await cluster.restart(node)
        await cluster.wait_whole(_HEAL_TIMEOUT)
        await clients.read_all(_FINAL_PROCESS + 1)


def _plan(settings: ChaosSettings, network: Network, data_dir: Path) -> ClusterPlan:
    nodes = settings.members + 1
    if isinstance(network, Namespaces):
        # Every node has an address of its own: the usual ports cannot clash with a user's.
        client_port, grpc_port = DEFAULT_CLIENT_PORT, DEFAULT_GRPC_PORT
    else:
        client_port, grpc_port = _free_run(nodes)
    return ClusterPlan(
        members=settings.members,
        tolerance=settings.tolerance,
        client_port=client_port,
        grpc_port=grpc_port,
        data_dir=data_dir,
        fsync=settings.fsync,
        report_every=60,
        hosts=tuple(network.host(n) for n in range(nodes)),
        extra=NODE_FLAGS,
        # The harness's clients reach the nodes from outside their namespaces, on the test
        # bridge: not from loopback.
        insecure=isinstance(network, Namespaces),
    )


def _free_run(nodes: int) -> tuple[int, int]:
    """The first of ``nodes`` consecutive free client ports (node i has the first + i) and the
    first of ``nodes`` gRPC ports right after them."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 30_000)
        if all(port_is_free("127.0.0.1", port) for port in range(base, base + 2 * nodes)):
            return base, base + nodes
    raise RuntimeError(f"no {2 * nodes} consecutive free ports found on 127.0.0.1")


def _judge(
    settings: ChaosSettings, ops: list[Op], faults: list[Fault], problems: list[str], origin: float
) -> RunSummary:
    started = time.monotonic()
    verdicts = check(ops)
    checked = time.monotonic() - started
    title = (
        f"kayit chaos: {settings.seconds:.0f} s, {settings.workload.workers} workers, "
        f"{settings.workload.keys} keys, TOLERANCE={settings.tolerance}, "
        f"{settings.members} members, network {settings.network}, seed {settings.seed}, "
        f"faults {','.join(sorted(settings.faults))}\n"
        f"checker: {len(ops):,} operations checked in {checked:.2f} s"
    )
    return RunSummary(title, ops, faults, verdicts, lost_writes(ops), origin, problems)


def _chart(summary: RunSummary, workers: int, path: Path) -> None:
    try:
        from kayit.chaos.chart import draw_timeline

        draw_timeline(summary, workers, path)
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install 'kayit[bench]')")


def check_saved(path: Path) -> int:
    """Check a history written by an earlier run; the exit code as for a run."""
    ops = pair(read_events(path))
    origin = min((op.invoked for op in ops), default=0.0)
    title = f"kayit chaos: checking {path}"
    summary = RunSummary(title, ops, [], check(ops), lost_writes(ops), origin, [])
    print(render(summary), end="")
    return 0 if summary.passed else 1
