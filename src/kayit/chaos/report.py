"""The end of a chaos run: what happened, what the checker found, and whether it passed."""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from dataclasses import dataclass

from kayit.chaos.checker import KeyVerdict
from kayit.chaos.history import Kind, Op, Outcome
from kayit.chaos.nemesis import Fault, FaultKind

_WINDOW_LINES = 20


@dataclass(frozen=True, slots=True)
class RunSummary:
    title: str
    ops: list[Op]
    faults: list[Fault]
    verdicts: list[KeyVerdict]
    lost: list[Op]
    origin: float  # monotonic time of the run's start: times are shown from it
    problems: list[str]  # what went wrong besides the history: crashes, tracebacks, no healing

    @property
    def passed(self) -> bool:
        verdicts_ok = all(v.status == "ok" for v in self.verdicts)
        return not self.lost and not self.problems and verdicts_ok

    def failovers(self) -> list[float | None]:
        """For each leader kill, the seconds until the cluster answered again: until the first
        acknowledged operation invoked after the kill completed (nothing is acknowledged
        without a leader: one was elected by then, maybe the killed node once restarted).
        None: no operation invoked after the kill was acknowledged before the load stopped."""
        acknowledged = sorted(
            (op.invoked, op.completed) for op in self.ops if op.outcome is Outcome.OK
        )
        invoked = [start for start, _ in acknowledged]
        # first_done[i]: the earliest completion among the acknowledged invoked at i or later.
        first_done = [float("inf")] * (len(acknowledged) + 1)
        for i in range(len(acknowledged) - 1, -1, -1):
            first_done[i] = min(first_done[i + 1], acknowledged[i][1])
        spans: list[float | None] = []
        for fault in self.faults:
            if fault.kind is not FaultKind.LEADER_KILL:
                continue
            done = first_done[bisect.bisect_left(invoked, fault.started)]
            spans.append(None if done == float("inf") else done - fault.started)
        return spans

    def slowest_set(self, during: FaultKind | None = None) -> float:
        """The longest acknowledged SET, of all or of those under way during a fault kind."""
        spans = [(f.started, f.ended or f.started) for f in self.faults if f.kind is during]
        slowest = 0.0
        for op in self.ops:
            if op.kind is not Kind.SET or op.outcome is not Outcome.OK:
                continue
            if during is None or any(op.invoked < e and op.completed > s for s, e in spans):
                slowest = max(slowest, op.completed - op.invoked)
        return slowest


def render(summary: RunSummary) -> str:
    lines = [summary.title, ""]
    tally = Counter((op.kind, op.outcome) for op in summary.ops)
    lines.append(f"operations: {len(summary.ops):,}")
    for kind in Kind:
        counts = "  ".join(f"{o.value} {tally[kind, o]:,}" for o in Outcome)
        lines.append(f"  {kind.value}: {counts}")
    lines.append("")
    kinds = Counter(f.kind for f in summary.faults)
    shown = ", ".join(f"{kind.value} {kinds[kind]}" for kind in FaultKind if kinds[kind])
    lines.append(f"faults injected: {len(summary.faults)} ({shown or 'none'})")
    lines += [f"  {fault.describe(summary.origin)}" for fault in summary.faults]
    lines.append(_failover_line(summary.failovers()))
    lines.append(
        f"slowest acknowledged SET: {summary.slowest_set():.2f} s overall, "
        f"{summary.slowest_set(FaultKind.PAUSE):.2f} s while a node was paused, "
        f"{summary.slowest_set(FaultKind.PARTITION):.2f} s while one was partitioned"
    )
    lines.append("")
    lines.append(f"acknowledged writes lost: {len(summary.lost)}")
    lines += [f"  {op.describe(summary.origin)}" for op in summary.lost[:_WINDOW_LINES]]
    good = sum(1 for v in summary.verdicts if v.status == "ok")
    lines.append(f"linearizability: {good} of {len(summary.verdicts)} keys ok")
    for verdict in summary.verdicts:
        if verdict.status == "ok":
            continue
        lines.append(f"  key {verdict.key}: {verdict.status.upper()}: {verdict.reason}")
        lines += [f"    {op.describe(summary.origin)}" for op in verdict.window[:_WINDOW_LINES]]
    lines.append(f"problems: {len(summary.problems)}")
    lines += [f"  {problem}" for problem in summary.problems]
    lines.append("")
    lines.append("verdict: " + ("PASS" if summary.passed else "FAIL"))
    return "\n".join(lines) + "\n"


def _failover_line(spans: list[float | None]) -> str:
    line = f"failover after leader kills: {len(spans)} kills"
    answered = [span for span in spans if span is not None]
    if answered:
        line += f", median {statistics.median(answered):.2f} s, max {max(answered):.2f} s"
    if len(answered) < len(spans):
        line += f", {len(spans) - len(answered)} not answered again before the load stopped"
    return line
