"""How long the linearizability checker takes on a simulated 100,000-operation history.

The history: 20 keys, 8 processes, half GETs, 12% of SETs INFO (6% of all operations), as
``kayit.chaos.simulate`` makes it. Prints the median of 5 runs of ``check`` (and of
``lost_writes``, which a chaos run also calls).

Run: ``.venv/bin/python benchmarks/checker_speed.py``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from kayit.chaos.checker import check, lost_writes
from kayit.chaos.history import Kind, Outcome
from kayit.chaos.simulate import Workload, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    workload = Workload(ops=args.ops, keys=20, processes=8, set_info=0.12)
    ops = simulate(workload, random.Random(args.seed))
    info = sum(op.kind is Kind.SET and op.outcome is Outcome.INFO for op in ops) / len(ops)
    print(
        f"{len(ops):,} operations, {workload.keys} keys, {workload.processes} processes, "
        f"{info:.1%} INFO SETs"
    )
    verdicts = check(ops)
    assert all(v.status == "ok" for v in verdicts), "a simulated history must pass"
    print(f"check:       median {median_seconds(lambda: check(ops), args.runs):.3f} s")
    print(f"lost_writes: median {median_seconds(lambda: lost_writes(ops), args.runs):.3f} s")


def median_seconds(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


if __name__ == "__main__":
    main()
