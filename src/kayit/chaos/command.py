"""``kayit chaos``: its flags, and the choices they leave to the machine (network, seed)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from pathlib import Path

from kayit.chaos.nemesis import FaultKind
from kayit.chaos.network import NetworkError, check_namespaces_usable
from kayit.chaos.workload import Workload
from kayit.config import check_tolerance

_DEFAULTS = Workload()


def add_chaos_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = commands.add_parser(
        "chaos",
        help="test a real local cluster under faults, with a linearizability checker",
        description="Start MEMBERS + 1 nodes as real processes (Raft elects any of them to "
        "lead), run client workers spread over the nodes doing SET and GET on a few keys with a "
        "unique value per SET, and meanwhile kill, pause and partition nodes, the one that leads "
        "at the moment among them (never more than TOLERANCE at once). Then heal, read every key "
        "back (once more after the node that leads lost its message files, so other holders "
        "serve them), check "
        "that the history is linearizable per key and that no acknowledged SET was lost, and "
        "write the history, a report and a timeline chart under OUT/<time>/. Exit status 0 "
        "when it passes, 1 on any violation.",
    )
    chaos.add_argument(
        "--seconds", type=float, default=60.0, help="length of the faulty part (%(default)s)"
    )
    chaos.add_argument(
        "--workers", type=int, default=_DEFAULTS.workers, help="client workers (%(default)s)"
    )
    chaos.add_argument(
        "--keys", type=int, default=_DEFAULTS.keys, help="ids written and read (%(default)s)"
    )
    chaos.add_argument(
        "--members", type=int, default=4, help="nodes besides the first (%(default)s)"
    )
    chaos.add_argument(
        "--tolerance",
        type=int,
        default=2,
        help="TOLERANCE, and the most faulty nodes at once (%(default)s)",
    )
    chaos.add_argument(
        "--faults",
        default=",".join(FaultKind),
        help="comma-separated fault kinds to inject, from: %(default)s (all)",
    )
    chaos.add_argument(
        "--network",
        choices=["auto", "netns", "loopback"],
        default="auto",
        help="netns: each node in a network namespace of its own (198.51.100.0/24), so links "
        "between nodes can be cut; needs root. loopback: every node on 127.0.0.1, no "
        "partitions. auto: netns where possible (%(default)s)",
    )
    chaos.add_argument(
        "--seed", type=int, help="seed of the fault schedule and the workload (random)"
    )
    chaos.add_argument(
        "--timeout",
        type=float,
        default=_DEFAULTS.timeout,
        help="seconds before a request's outcome counts as unknown (%(default)s)",
    )
    chaos.add_argument(
        "--fsync",
        choices=["always", "everysec", "never"],
        default="always",
        help="the nodes' fsync policy (%(default)s)",
    )
    chaos.add_argument(
        "--no-final-wipe",
        action="store_true",
        help="skip the last read-back after the node that leads lost its message files",
    )
    chaos.add_argument(
        "--out", type=Path, default=Path("chaos-results"), help="where results go (%(default)s)"
    )
    chaos.add_argument(
        "--check", type=Path, metavar="HISTORY", help="only check a saved history.jsonl and report"
    )
    chaos.set_defaults(run=run_chaos_command)  # fmt: skip


def run_chaos_command(args: argparse.Namespace) -> int:
    from kayit.chaos.run import ChaosSettings, check_saved, run_chaos

    if args.check is not None:
        return check_saved(args.check)
    try:
        kinds = frozenset(
            FaultKind(kind.strip()) for kind in args.faults.split(",") if kind.strip()
        )
    except ValueError:
        print(f"kayit chaos: --faults: choose from {', '.join(FaultKind)}", file=sys.stderr)
        return 2
    check_tolerance(args.tolerance, "--tolerance")
    if args.members < max(args.tolerance, 1) or args.workers < 1 or args.keys < 1:
        print(
            "kayit chaos: need --members >= TOLERANCE, --workers >= 1, --keys >= 1", file=sys.stderr
        )
        return 2
    network = _choose_network(args.network, FaultKind.PARTITION in kinds)
    if network is None:
        return 2
    if network == "loopback" and FaultKind.PARTITION in kinds:
        kinds -= {FaultKind.PARTITION}
        print("kayit chaos: no partitions on loopback (they need --network netns)", file=sys.stderr)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    print(f"kayit chaos: seed {seed} (run again with --seed {seed})", flush=True)
    settings = ChaosSettings(
        seconds=args.seconds,
        workload=Workload(workers=args.workers, keys=args.keys, timeout=args.timeout),
        members=args.members,
        tolerance=args.tolerance,
        faults=kinds,
        network=network,
        seed=seed,
        out=args.out,
        fsync=args.fsync,
        final_wipe=not args.no_final_wipe,
    )
    try:
        return asyncio.run(run_chaos(settings))
    except asyncio.CancelledError:
        print("kayit chaos: stopped by SIGTERM; nodes stopped, namespaces removed", file=sys.stderr)
        return 143


def _choose_network(wanted: str, partitions: bool) -> str | None:
    if wanted == "loopback":
        return wanted
    try:
        check_namespaces_usable()
    except NetworkError as error:
        if wanted == "netns":
            print(f"kayit chaos: {error}", file=sys.stderr)
            return None
        if partitions:
            print(f"kayit chaos: using loopback: {error}", file=sys.stderr)
        return "loopback"
    return "netns" if os.geteuid() == 0 else "loopback"
