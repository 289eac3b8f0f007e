"""A timeline of a chaos run: operations as points, one row per client worker, faults as bands.
Needs matplotlib (the ``bench`` or ``dev`` extra)."""

from __future__ import annotations

from pathlib import Path

from kayit.chaos.history import Kind, Outcome
from kayit.chaos.nemesis import FaultKind
from kayit.chaos.report import RunSummary

_FAULT_COLOURS = {
    FaultKind.KILL: "tab:red",
    FaultKind.PAUSE: "tab:purple",
    FaultKind.PARTITION: "tab:orange",
    FaultKind.LEADER_KILL: "black",
    FaultKind.LEADER_PAUSE: "tab:brown",
}
_OUTCOME_STYLE = {Outcome.OK: ("tab:green", "."), Outcome.FAIL: ("red", "x")}


def draw_timeline(summary: RunSummary, workers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(14, 5), dpi=110)
    origin = summary.origin
    for fault in summary.faults:
        end = fault.ended if fault.ended is not None else fault.started
        colour = _FAULT_COLOURS[fault.kind]
        axes.axvspan(fault.started - origin, end - origin, color=colour, alpha=0.12, lw=0)
        axes.text(fault.started - origin, workers + 0.2 + 0.35 * (fault.node % 5),
                  f"{fault.kind.value} n{fault.node}", fontsize=6, color=colour)  # fmt: skip
    for kind, offset in ((Kind.SET, -0.15), (Kind.GET, 0.15)):
        for outcome in Outcome:
            chosen = [op for op in summary.ops if op.kind is kind and op.outcome is outcome]
            if not chosen:
                continue
            colour, marker = _OUTCOME_STYLE.get(outcome, ("tab:orange", "d"))
            axes.scatter(
                [op.completed - origin for op in chosen],
                [op.process % workers + offset for op in chosen],
                s=4, c=colour, marker=marker, linewidths=0.5,
                label=f"{kind.value} {outcome.value} ({len(chosen):,})",
            )  # fmt: skip
    for fault_kind, colour in _FAULT_COLOURS.items():
        axes.axvspan(0, 0, color=colour, alpha=0.3, label=f"fault: {fault_kind.value}")
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("client worker (SET below, GET above the line)")
    axes.set_ylim(-0.6, workers + 2)
    axes.set_title(summary.title.splitlines()[0])
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, markerscale=3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
