"""kayit against Redis on this machine, one system after another, measured by ``kayit bench``.

Systems: Redis (AOF, ``appendfsync everysec``), one kayit node (TOLERANCE=0), and kayit
clusters with TOLERANCE=1 (leader + 2 members) and TOLERANCE=2 (leader + 4 members). Each
gets SET then GET passes (the GETs after a fill has set every key) with 1 and 50 connections,
pipeline 1 and 16, 64-byte values over 10000 keys. Every server runs on free loopback ports in a
fresh temporary directory and is stopped by PID afterwards, also on error or Ctrl-C.

Writes results.json (every raw ``kayit bench --json`` object and the machine), results.md (a
Markdown table with ratios to Redis from the same run) and chart.png, and prints the table.
Run it through ``benchmarks/run``, which sets up the virtualenv first.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from kayit.server.ports import free_ports

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
REDIS_MISSING = "redis-server not installed: apt-get install redis-server"
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
START_TIMEOUT = 30.0


# --------------------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class System:
    key: str
    label: str
    description: str
    tolerance: int | None = None  # None: Redis
    members: int = 0

    @property
    def is_redis(self) -> bool:
        return self.tolerance is None


REDIS = System("redis", "Redis", "redis-server, AOF with appendfsync everysec, no RDB snapshots")
SYSTEMS: tuple[System, ...] = (
    REDIS,
    System("kayit-t0", "kayit 1 node", "one kayit leader, TOLERANCE=0", tolerance=0),
    System("kayit-t1", "kayit T=1", "kayit leader + 2 members, TOLERANCE=1", 1, 2),
    System("kayit-t2", "kayit T=2", "kayit leader + 4 members, TOLERANCE=2", 2, 4),
)


class Case(NamedTuple):
    op: str  # "set" or "get"
    connections: int
    pipeline: int

    @property
    def label(self) -> str:
        return f"{self.op.upper()} c={self.connections} P={self.pipeline}"


def cases(quick: bool) -> list[Case]:
    """The matrix, SETs first: the GETs run after the keyspace has been filled."""
    connections = (50,) if quick else (1, 50)
    return [
        Case(op, conns, pipeline)
        for op in ("set", "get")
        for conns in connections
        for pipeline in (1, 16)
    ]


class Measurement(TypedDict):
    system: str
    op: str
    connections: int
    pipeline: int
    bench: dict[str, Any] | None  # the object ``kayit bench --json`` printed
    error: str | None


def measurement(
    system: str, case: Case, bench: dict[str, Any] | None, error: str | None = None
) -> Measurement:
    return Measurement(
        system=system,
        op=case.op,
        connections=case.connections,
        pipeline=case.pipeline,
        bench=bench,
        error=error,
    )


# --------------------------------------------------------------------------- tables and ratios


def _bench_of(results: Sequence[Measurement], system: str, case: Case) -> dict[str, Any] | None:
    """The `kayit bench` output of one system for one case, if it ran."""
    for result in results:
        if (
            result["system"] == system
            and Case(result["op"], result["connections"], result["pipeline"]) == case
            and result["bench"] is not None
        ):
            return result["bench"]
    return None


def throughput(results: Sequence[Measurement], system: str, case: Case) -> float | None:
    bench = _bench_of(results, system, case)
    return None if bench is None else float(bench["throughput"])


def p99(results: Sequence[Measurement], system: str, case: Case) -> float | None:
    bench = _bench_of(results, system, case)
    return None if bench is None else float(bench["latency_ms"]["p99"])


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def format_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 10:
        return f"{value:.0f}x"
    if value >= 0.1:
        return f"{value:.2f}x"
    if value >= 0.001:
        return f"{value:.3f}x"
    return "<0.001x"


def format_throughput(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def format_ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def table_cases(results: Sequence[Measurement]) -> list[Case]:
    """Rows in matrix order (op, then connections, then pipeline), as measured."""
    seen = {Case(r["op"], r["connections"], r["pipeline"]) for r in results}
    order = {"set": 0, "get": 1}
    return sorted(seen, key=lambda c: (order.get(c.op, 2), c.op, c.connections, c.pipeline))


def markdown_table(results: Sequence[Measurement], systems: Sequence[System] = SYSTEMS) -> str:
    """Throughput (ops/s) and p99 (ms) per system, then each kayit system's throughput as a
    fraction of Redis's in the same row ("n/a" without a Redis measurement)."""
    kayits = [s for s in systems if not s.is_redis]
    redis = next((s for s in systems if s.is_redis), None)
    header = ["op", "conns", "pipeline"]
    for system in systems:
        header += [f"{system.label} ops/s", f"{system.label} p99 ms"]
    if redis is not None:
        header += [f"{system.label} / Redis" for system in kayits]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] * 3 + [" ---: "] * (len(header) - 3)) + "|",
    ]
    for case in table_cases(results):
        row = [case.op.upper(), str(case.connections), str(case.pipeline)]
        for system in systems:
            row += [
                format_throughput(throughput(results, system.key, case)),
                format_ms(p99(results, system.key, case)),
            ]
        if redis is not None:
            reference = throughput(results, redis.key, case)
            row += [
                format_ratio(ratio(throughput(results, s.key, case), reference)) for s in kayits
            ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def problems(results: Sequence[Measurement], systems: Sequence[System] = SYSTEMS) -> list[str]:
    """One line per measurement that failed or counted errors."""
    labels = {s.key: s.label for s in systems}
    notes = []
    for result in results:
        case = Case(result["op"], result["connections"], result["pipeline"])
        name = f"{labels.get(result['system'], result['system'])} {case.label}"
        if result["error"] is not None:
            notes.append(f"{name}: failed: {result['error']}")
        elif result["bench"] is not None and result["bench"].get("errors", 0):
            bench = result["bench"]
            notes.append(f"{name}: {bench['errors']} errors in {bench['requests']} requests")
    return notes


def header_line(machine: dict[str, Any]) -> str:
    return (
        f"Measured {machine['date']} on {machine['cpu_model']} ({machine['cores']} cores), "
        f"{machine['os']}, Python {machine['python']}, "
        f"{machine.get('redis_version') or 'no redis-server'}, "
        f"kayit {machine.get('kayit_commit') or 'unknown commit'}, "
        f"data on {machine.get('data_fs') or 'unknown filesystem'}, "
        f"load average {machine.get('load_average', 'unknown')} at start."
    )


def markdown_report(
    results: Sequence[Measurement],
    machine: dict[str, Any],
    settings: dict[str, Any],
    notes: Sequence[str] = (),
    systems: Sequence[System] = SYSTEMS,
) -> str:
    parts = [
        "# kayit benchmark results",
        "",
        header_line(machine),
        "",
        f"Each cell: `kayit bench --duration {settings['duration']:g}` with "
        f"{settings['size']}-byte values over {settings['keyspace']} keys; kayit spoke "
        f"`{settings['kayit_protocol']}`, Redis `resp`. GETs ran after every key was set. "
        "Ratios are each kayit system's throughput divided by Redis's in the same row and "
        "run.",
        "",
        markdown_table(results, systems),
    ]
    lines = [*notes, *problems(results, systems)]
    if lines:
        parts += ["", *(f"- {line}" for line in lines)]
    return "\n".join(parts) + "\n"


def needs_log_scale(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > 30


def short_number(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


# --------------------------------------------------------------------------- the machine


def _run_text(command: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine_info(data_root: Path) -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    redis_version = None
    if shutil.which("redis-server"):
        raw = _run_text(["redis-server", "--version"]) or ""
        version = next((w[2:] for w in raw.split() if w.startswith("v=")), None)
        redis_version = f"Redis {version}" if version else raw or None
    commit = _run_text(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"])
    if commit and _run_text(["git", "-C", str(HERE.parent), "status", "--porcelain", "src"]):
        commit += " + local changes"
    fs = _run_text(["df", "--output=fstype", str(data_root)])
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": _run_text(["uname", "-a"]) or platform.platform(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "redis_version": redis_version,
        "kayit_commit": commit,
        "data_fs": fs.splitlines()[-1].strip() if fs else None,
        "load_average": load_average(),
    }


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine makes the numbers noisy."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies over all CPUs, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:]]
    return values[3] + values[4], sum(values[:8])  # idle + iowait; without guest time


def others_cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy during ``seconds`` while the suite itself runs nothing."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    idle, total = after[0] - before[0], after[1] - before[1]
    return round(1 - idle / total, 3)


def busy_warning(busy: float | None) -> str | None:
    if busy is None or busy <= 0.2:
        return None
    return (
        f"other processes kept {busy:.0%} of the CPUs busy just before this system started: "
        "its numbers are noisy"
    )


# --------------------------------------------------------------------------- processes


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


class SetupError(RuntimeError):
    pass


@dataclass
class Process:
    name: str
    command: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the suite only; it stops these by PID
            )

    def check_running(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            code = None if self.popen is None else self.popen.returncode
            raise SetupError(f"{self.name} exited (code {code}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


@dataclass
class Server:
    """The processes of one system under test, stopped together."""

    system: System
    workdir: Path
    port: int = 0
    protocol: str = "text"
    processes: list[Process] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def spawn(self, name: str, command: list[str]) -> Process:
        process = Process(name, command, self.workdir / f"{name}.log")
        self.processes.append(process)
        process.start(self.workdir)
        return process

    def stop(self) -> None:
        """SIGTERM to every process, SIGKILL to those still running STOP_GRACE s later."""
        running = [p for p in self.processes if p.popen is not None and p.popen.poll() is None]
        for process in running:
            assert process.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            assert process.popen is not None
            try:
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.popen.pid, signal.SIGKILL)
                process.popen.wait()
                self.notes.append(f"{process.name} ignored SIGTERM for {STOP_GRACE:g} s: killed")
                continue
            code = process.popen.returncode
            if code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                self.notes.append(f"{process.name} exited with code {code} on SIGTERM")

    def log_warnings(self) -> list[str]:
        """Lines the nodes logged (they run with -q: warnings and errors only)."""
        found = []
        for process in self.processes:
            with contextlib.suppress(OSError):
                for line in process.log_path.read_text(errors="replace").splitlines():
                    if line.strip():
                        found.append(f"{process.name}: {line.strip()}")
        return found


def port_open(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(server: Server) -> None:
    (server.port,) = free_ports(1)
    server.protocol = "resp"
    process = server.spawn(
        "redis-server",
        [
            "redis-server",
            "--port", str(server.port),
            "--bind", HOST,
            "--dir", str(server.workdir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
        ],
    )  # fmt: skip

    def ready() -> bool:
        process.check_running()
        return redis_ping(server.port)

    wait_for(ready, START_TIMEOUT, "redis-server to answer PING")


def _ports(grpc_port: int, client_port: int) -> list[str]:
    return ["--grpc-port", str(grpc_port), "--client-port", str(client_port)]


def start_kayit(server: Server, protocol: str) -> None:
    system = server.system
    assert system.tolerance is not None
    server.port, leader_port, *ports = free_ports(2 + 2 * system.members)
    member_ports, member_client_ports = ports[: system.members], ports[system.members :]
    server.protocol = protocol
    data_dir = server.workdir / "data"
    node = [sys.executable, "-m", "kayit", "node"]
    common = ["--data-dir", str(data_dir), "--report-every", "3600", "-q"]
    leader = server.spawn(
        "leader",
        [*node, "--leader", *_ports(leader_port, server.port),
         "--tolerance", str(system.tolerance), *common],
    )  # fmt: skip

    def leader_ready() -> bool:
        leader.check_running()
        return port_open(server.port)

    wait_for(leader_ready, START_TIMEOUT, "the kayit leader's client port")
    members = [
        server.spawn(
            f"member-{port}",
            [*node, "--join", f"{HOST}:{leader_port}", *_ports(port, client_port), *common],
        )
        for port, client_port in zip(member_ports, member_client_ports, strict=True)
    ]
    if members:
        from kayit.rpc.status import fetch_status

        def all_alive() -> bool:
            for process in [leader, *members]:
                process.check_running()
            try:
                status = fetch_status(f"{HOST}:{leader_port}", timeout=2)
            except ConnectionError:
                return False
            alive = [m for m in status.members if m.alive]
            return len(alive) == len(members)

        wait_for(all_alive, START_TIMEOUT, f"the leader to report {len(members)} live members")


@contextlib.contextmanager
def running(system: Server) -> Iterator[Server]:
    try:
        yield system
    finally:
        system.stop()


# --------------------------------------------------------------------------- kayit bench


class BenchError(RuntimeError):
    pass


def bench_command(
    server: Server,
    *,
    connections: int,
    pipeline: int,
    set_ratio: float,
    size: int,
    keyspace: int,
    duration: float,
) -> list[str]:
    return [
        sys.executable, "-m", "kayit", "bench",
        "-h", HOST, "-p", str(server.port),
        "-c", str(connections), "--duration", f"{duration:g}", "-P", str(pipeline),
        "--set-ratio", f"{set_ratio:g}", "-d", str(size), "--keyspace", str(keyspace),
        "--protocol", server.protocol, "--json", "--no-progress",
    ]  # fmt: skip


def parse_bench_output(stdout: str) -> dict[str, Any]:
    """The one JSON object ``kayit bench --json`` prints (tolerating stray lines around it)."""
    with contextlib.suppress(ValueError):
        value = json.loads(stdout)
        if isinstance(value, dict):
            return value
    for line in reversed(stdout.splitlines()):
        if line.strip().startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    raise BenchError(f"no JSON object in kayit bench output: {stdout[-500:]!r}")


def run_bench(command: list[str], timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"kayit bench did not finish within {timeout:g} s") from error
    # Exit code 1 after a JSON object: a run with errors, counted in it (and noted in results.md).
    finished = done.returncode == 0 or (done.returncode == 1 and done.stdout.strip() != "")
    if not finished:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(f"kayit bench exited with code {done.returncode}: " + " | ".join(tail))
    result = parse_bench_output(done.stdout)
    if "throughput" not in result or "latency_ms" not in result:
        raise BenchError(f"kayit bench JSON lacks throughput/latency_ms: {result}")
    return result


def set_request(protocol: str, key: bytes, value: bytes) -> bytes:
    if protocol == "resp":
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(key),
            key,
            len(value),
            value,
        )
    return b"SET " + key + b" " + value + b"\n"


def fill_keyspace(server: Server, keyspace: int, size: int, batch: int = 500) -> float:
    """SET every key kayit bench may ask for (pipelined, one connection); returns seconds."""
    from kayit.bench.settings import format_key  # the keys kayit bench picks from

    value = b"x" * size  # like kayit bench
    started = time.monotonic()
    with socket.create_connection((HOST, server.port), timeout=60) as conn:
        reader = conn.makefile("rb")
        for first in range(0, keyspace, batch):
            numbers = range(first, min(first + batch, keyspace))
            conn.sendall(
                b"".join(set_request(server.protocol, format_key(n), value) for n in numbers)
            )
            for number in numbers:
                reply = reader.readline().rstrip(b"\r\n")
                if reply not in (b"OK", b"+OK"):
                    key = format_key(number).decode()
                    raise BenchError(f"fill: SET {key} got {reply[:200]!r}")
    return time.monotonic() - started


# --------------------------------------------------------------------------- chart


def write_chart(
    results: Sequence[Measurement],
    systems: Sequence[System],
    path: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table_cases(results)
    shown = [s for s in systems if any(r["system"] == s.key for r in results)]
    fig, ax = plt.subplots(figsize=(max(8.0, 1.35 * len(rows) + 2), 6.0), layout="constrained")
    width = 0.8 / max(1, len(shown))
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    values: list[float] = []
    for index, system in enumerate(shown):
        heights = [throughput(results, system.key, case) or 0.0 for case in rows]
        values += heights
        xs = [i + (index - (len(shown) - 1) / 2) * width for i in range(len(rows))]
        bars = ax.bar(xs, heights, width, label=system.label, color=colors[index % len(colors)])
        ax.bar_label(
            bars,
            labels=[short_number(h) if h > 0 else "n/a" for h in heights],
            fontsize=7,
            rotation=90,
            padding=2,
        )
    if needs_log_scale(values):
        ax.set_yscale("log")
        ax.set_ylabel("throughput (operations/s, log scale)")
        positive = [v for v in values if v > 0]
        if positive:
            ax.set_ylim(min(positive) / 2, max(positive) * 4)
    else:
        ax.set_ylabel("throughput (operations/s)")
        ax.set_ylim(0, max(values, default=1.0) * 1.2)
    for index in range(1, len(rows)):
        if rows[index].op != rows[index - 1].op:  # a line between the SETs and the GETs
            ax.axvline(index - 0.5, color="0.5", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(
        [f"{c.op.upper()}\n{c.connections} conn{'s' if c.connections > 1 else ''}\n"
         f"pipeline {c.pipeline}" for c in rows]
    )  # fmt: skip
    ax.set_xlabel("operation, client connections, pipeline depth")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", fontsize=9)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def chart_title(machine: dict[str, Any], settings: dict[str, Any]) -> str:
    return (
        f"kayit vs Redis throughput ({settings['size']}-byte values, {settings['keyspace']} keys, "
        f"{settings['duration']:g} s each)\n{machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['os']}, {machine['date']}"
    )


# --------------------------------------------------------------------------- the run


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="Benchmark Redis (appendfsync everysec) and kayit (1 node, TOLERANCE=1, "
        "TOLERANCE=2) one after another on this machine with kayit bench; write "
        "results.json, results.md and chart.png.",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per measurement (3; 1 with --quick)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of about a minute: 50 connections only, 1 s each, results in "
        "benchmarks/results/quick/",
    )
    parser.add_argument(
        "--systems",
        default=",".join(s.key for s in SYSTEMS),
        help="comma-separated systems to run (%(default)s)",
    )
    parser.add_argument("--keyspace", type=int, default=10000, help="keys (%(default)s)")
    parser.add_argument("--size", type=int, default=64, help="value bytes (%(default)s)")
    parser.add_argument(
        "--kayit-protocol",
        choices=["text", "resp"],
        default="text",
        help="protocol kayit bench speaks to kayit (%(default)s); Redis always gets resp",
    )
    parser.add_argument("--out", type=Path, help="results directory (benchmarks/results)")
    parser.add_argument(
        "--tmpdir", type=Path, help="where the servers' data directories go ($TMPDIR or /tmp)"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.quick else 3.0
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.out is None:
        args.out = HERE / "results" / "quick" if args.quick else HERE / "results"
    known = {s.key: s for s in SYSTEMS}
    chosen = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        parser.error(f"--systems: choose from {', '.join(known)} (got {args.systems!r})")
    args.system_list = [s for s in SYSTEMS if s.key in chosen]
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_system(
    server: Server,
    matrix: Sequence[Case],
    args: argparse.Namespace,
    results: list[Measurement],
    fills: list[dict[str, Any]],
) -> None:
    """Run the matrix against one started server, appending to results and fills."""
    filled = False
    timeout = args.duration + 120
    for case in matrix:
        if case.op == "get" and not filled:
            seconds = fill_keyspace(server, args.keyspace, args.size)
            log(f"  fill: set all {args.keyspace} keys in {seconds:.1f} s")
            fills.append(
                {"system": server.system.key, "keys": args.keyspace, "seconds": round(seconds, 3)}
            )
            filled = True
        command = bench_command(
            server, connections=case.connections, pipeline=case.pipeline,
            set_ratio=1.0 if case.op == "set" else 0.0, size=args.size,
            keyspace=args.keyspace, duration=args.duration,
        )  # fmt: skip
        try:
            bench = run_bench(command, timeout)
        except BenchError as error:
            log(f"  {case.label}: FAILED: {error}")
            results.append(measurement(server.system.key, case, None, str(error)))
            for process in server.processes:
                process.check_running()  # a dead server fails the whole system
            continue
        errors = f", {bench.get('errors')} errors" if bench.get("errors") else ""
        log(
            f"  {case.label}: {bench['throughput']:,.0f} ops/s, "
            f"p99 {bench['latency_ms']['p99']:.2f} ms{errors}"
        )
        results.append(measurement(server.system.key, case, bench))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)
    started = time.monotonic()
    matrix = cases(args.quick)
    data_root = Path(tempfile.mkdtemp(prefix="kayit-bench-", dir=args.tmpdir))
    machine = machine_info(data_root)
    settings = {
        "duration": args.duration,
        "quick": args.quick,
        "keyspace": args.keyspace,
        "size": args.size,
        "kayit_protocol": args.kayit_protocol,
        "redis_protocol": "resp",
        "matrix": [c._asdict() for c in matrix],
    }
    results: list[Measurement] = []
    fills: list[dict[str, Any]] = []
    notes: list[str] = []  # lines under the table: skipped or failed systems, busy machine
    system_info: list[dict[str, Any]] = []
    failed = False
    log(f"kayit benchmark suite: {len(matrix)} measurements of {args.duration:g} s per system")
    log(header_line(machine))
    try:
        for system in args.system_list:
            info: dict[str, Any] = {
                "key": system.key,
                "label": system.label,
                "description": system.description,
            }
            system_info.append(info)
            if system.is_redis and shutil.which("redis-server") is None:
                log(REDIS_MISSING)
                notes.append(f"Redis skipped: {REDIS_MISSING}")
                info["skipped"] = REDIS_MISSING
                continue
            log(f"== {system.label}: {system.description}")
            info["cpu_busy_before"] = others_cpu_busy()
            warning = busy_warning(info["cpu_busy_before"])
            if warning:
                log(f"  warning: {warning}")
                notes.append(f"{system.label}: {warning}")
            workdir = data_root / system.key
            workdir.mkdir()
            server = Server(system, workdir)
            logged: list[str] | None = None
            try:
                with running(server):
                    if system.is_redis:
                        start_redis(server)
                    else:
                        start_kayit(server, args.kayit_protocol)
                    info["commands"] = [p.command for p in server.processes]
                    measure_system(server, matrix, args, results, fills)
                    logged = server.log_warnings()  # before stopping: shutdown chatter aside
            except (RuntimeError, OSError) as error:  # SetupError, BenchError, timeouts
                failed = True
                log(f"  {system.label} FAILED: {error}")
                info["failed"] = str(error)
                notes.append(f"{system.label} failed: {str(error).splitlines()[0]}")
            if logged is None:  # failed: everything the processes said may help
                logged = server.log_warnings()
            logged = [*server.notes, *([] if system.is_redis else logged)]
            if logged:
                info["notes"] = logged
                for note in logged[:10]:
                    log(f"  note: {note}")
                notes += [f"{system.label}: {note}" for note in server.notes]
    except KeyboardInterrupt:
        log("interrupted: servers stopped, nothing written")
        return 130
    except SystemExit:
        log("terminated: servers stopped, nothing written")
        raise
    finally:
        shutil.rmtree(data_root, ignore_errors=True)

    elapsed = time.monotonic() - started
    settings["elapsed_s"] = round(elapsed, 1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": settings,
        "machine": machine,
        "systems": system_info,
        "measurements": results,
        "fills": fills,
    }
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    report = markdown_report(results, machine, settings, notes, args.system_list)
    (out / "results.md").write_text(report)
    written = ["results.json", "results.md"]
    if results:
        write_chart(results, args.system_list, out / "chart.png", chart_title(machine, settings))
        written.append("chart.png")
    print(report, end="")
    log(f"wrote {', '.join(written)} to {out} in {elapsed:.0f} s")
    return 1 if failed or any(r["error"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
