"""How long clients wait when the leader is killed: SIGKILL the node that leads, again and again.

Starts NODES real ``kayit node`` processes on loopback (TOLERANCE=T), then KILLS times: finds
the node that leads, sends it SIGNAL, and measures from then
- until a surviving node reports a new leader (``elected``), and
- until a SET sent through a surviving node is acknowledged (``answered``: what a client sees;
  its command waits for the election itself).
Meanwhile WRITERS connections SET without pause through a node that does not lead, and every
reply that is not OK is counted (with ``--signal term`` the leader hands over first, so there
should be none). The stopped node is started again with its own command line and the next
round waits until the leader sees every node alive. At the end every acknowledged SET is read
back.

Run: ``.venv/bin/python benchmarks/failover_time.py [--kills 20] [--nodes 5] [--tolerance 2]
[--signal kill|term] [--writers 4]``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

from kayit.client import KayitClient
from kayit.rpc import kayit_pb2 as pb
from kayit.rpc.status import fetch_status
from kayit.server.ports import free_ports


class Node:
    def __init__(self, grpc_port: int, client_port: int, args: list[str], log: Path) -> None:
        self.grpc_port, self.client_port = grpc_port, client_port
        self.args, self.log = args, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kayit", "node", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, signum: int = signal.SIGKILL) -> None:
        self.signal(signum)
        if self.process is not None:
            self.process.wait()

    def signal(self, signum: int) -> None:
        """Send ``signum`` without waiting for the process to end: a node stopped by SIGTERM
        hands over first, then takes a moment more to close."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)


class Writers:
    """Connections that SET one after another through ``target`` (moved between rounds, never
    to the node about to be stopped), keeping what was acknowledged and counting the rest."""

    def __init__(self, count: int) -> None:
        self.target: Node | None = None
        self.acknowledged: dict[str, str] = {}
        self.failed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(count)
        ]

    def start(self, target: Node) -> None:
        self.target = target
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _write(self, writer: int) -> None:
        sequence = 0
        while not self._stop.is_set():
            target = self.target
            assert target is not None
            with KayitClient("127.0.0.1", target.client_port, timeout=30) as client:
                while self.target is target and not self._stop.is_set():
                    sequence += 1
                    key, value = f"w{writer}-{sequence}", f"value {sequence}"
                    try:
                        reply = client.set(key, value)
                    except OSError as error:
                        reply = f"connection lost: {error}".encode()
                    with self._lock:
                        if reply == b"OK":
                            self.acknowledged[key] = value
                        else:
                            self.failed[reply.decode(errors="replace")[:60]] += 1
                    if not reply.startswith((b"OK", b"ERROR")):
                        break


def status(node: Node) -> pb.StatusReply | None:
    try:
        return fetch_status(node.address, timeout=0.5)
    except ConnectionError:
        return None


def leader(nodes: list[Node]) -> tuple[Node, int] | None:
    """The node that leads now, and its term."""
    for node in nodes:
        reply = status(node)
        if reply is not None and reply.role == "leader":
            return node, reply.term
    return None


def wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def whole(nodes: list[Node]) -> bool:
    found = leader(nodes)
    if found is None:
        return False
    reply = status(found[0])
    others = len(nodes) - 1
    return (
        reply is not None
        and sum(m.alive for m in reply.members) == others
        and sum(m.voter for m in reply.members) == min(others, 2 * reply.tolerance)
    )


def _follows(node: Node) -> bool:
    reply = status(node)
    return reply is not None and reply.role == "member" and bool(reply.leader_address)


def start_cluster(root: Path, count: int, tolerance: int) -> list[Node]:
    ports = free_ports(2 * count)
    common = ["--data-dir", str(root / "data"), "--report-every", "3600", "--cache-mb", "0"]
    nodes = []
    for n in range(count):
        grpc_port, client_port = ports[n], ports[count + n]
        role = (
            ["--leader", "--tolerance", str(tolerance)]
            if n == 0
            else ["--join", f"127.0.0.1:{ports[0]}"]
        )
        args = [*role, "--grpc-port", str(grpc_port), "--client-port", str(client_port), *common]
        nodes.append(Node(grpc_port, client_port, args, root / f"node{n}.log"))
    nodes[0].start()
    wait(lambda: leader(nodes[:1]) is not None, 20, "the first node to lead")
    for node in nodes[1:]:
        node.start()
    wait(lambda: whole(nodes), 30, "every node to join")
    return nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--tolerance", type=int, default=2)
    parser.add_argument("--signal", choices=("kill", "term"), default="kill")
    parser.add_argument("--writers", type=int, default=4, help="connections SETting meanwhile")
    parser.add_argument("--dir", type=Path, help="keep data and node logs here (a temp dir)")
    args = parser.parse_args()
    signum = signal.SIGKILL if args.signal == "kill" else signal.SIGTERM
    writers = Writers(args.writers)
    elected: list[float] = []
    answered: list[float] = []
    acknowledged: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kayit-failover-") as tmp:
        root = args.dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        nodes = start_cluster(root, args.nodes, args.tolerance)
        started = False
        try:
            for round_ in range(args.kills):
                wait(lambda: whole(nodes), 30, "every node alive")
                found = leader(nodes)
                assert found is not None
                victim, term = found
                survivor = next(n for n in nodes if n is not victim)
                if not started:
                    writers.start(survivor)
                    started = True
                elif writers.target is victim:
                    writers.target = survivor
                    time.sleep(0.5)  # the writers move over between two SETs
                killed = time.monotonic()
                victim.signal(signum)
                with KayitClient("127.0.0.1", survivor.client_port, timeout=30) as client:
                    key, value = f"k{round_}", f"after kill {round_}"
                    reply = client.set(key, value)
                    while reply.startswith(b"ERROR TIMEOUT"):  # sent to the dying leader
                        reply = client.set(key, value)
                answered.append(time.monotonic() - killed)
                if reply == b"OK":
                    acknowledged[key] = value

                def new_leader(term: int = term, victim: Node = victim) -> bool:
                    now = leader([n for n in nodes if n is not victim])
                    return now is not None and now[1] > term

                wait(new_leader, 30, "a new leader")
                elected.append(time.monotonic() - killed)
                print(
                    f"kill {round_ + 1}: {victim.address} (term {term}); SET through "
                    f"{survivor.address} answered {reply!r} after {answered[-1]:.2f} s",
                    flush=True,
                )
                assert victim.process is not None
                victim.process.wait(timeout=30)  # SIGTERM: it hands over, then closes
                victim.start()
                # Back in its cluster: it answers, and follows the new leader.
                wait(partial(_follows, victim), 30, "the killed node to follow again")
            wait(lambda: whole(nodes), 30, "every node alive")
            writers.stop()
            acknowledged.update(writers.acknowledged)
            others = [("127.0.0.1", node.client_port) for node in nodes[1:]]
            with KayitClient("127.0.0.1", nodes[0].client_port, 30, fallbacks=others) as client:
                misread = [k for k, v in acknowledged.items() if client.get(k) != v.encode()]
        finally:
            for node in nodes:
                node.kill()
    print(
        f"\n{args.kills} leader stops (SIG{args.signal.upper()}), {args.nodes} nodes, "
        f"TOLERANCE={args.tolerance}"
    )
    print(
        f"  writers   {len(writers.acknowledged)} SETs acknowledged, "
        f"{sum(writers.failed.values())} not: {dict(writers.failed) or 'none'}"
    )
    for name, times in (("answered", answered), ("elected", elected)):
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(
            f"  {name:<9} p50 {statistics.median(ordered):.2f} s  p99 {p99:.2f} s  "
            f"max {ordered[-1]:.2f} s"
        )
    print(f"  acknowledged SETs read back: {len(acknowledged) - len(misread)}/{len(acknowledged)}")
    if misread:
        raise SystemExit(f"lost: {misread}")


if __name__ == "__main__":
    main()
