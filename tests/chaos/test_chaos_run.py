"""The chaos run as the suite runs it: a real cluster in network namespaces, clients on 20 keys
spread over the nodes, nodes killed, paused and partitioned and whichever node leads at the
moment killed and paused (Raft elects another meanwhile), never more than TOLERANCE nodes at
once; the history must be linearizable and nothing acknowledged lost.

Length: KAYIT_CHAOS_SECONDS (75); seed: KAYIT_CHAOS_SEED. For an hour by hand:
    KAYIT_CHAOS_SECONDS=3600 ./run-tests tests/chaos -s
(or `./kayit chaos --seconds 3600`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kayit.chaos.nemesis import FaultKind

TOLERANCE = 2


def _most_at_once(faults: list[dict[str, float]]) -> int:
    edges = sorted([(f["started"], 1) for f in faults] + [(f["ended"], -1) for f in faults])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


@pytest.mark.cluster
@pytest.mark.host_wide
def test_chaos_run_is_linearizable_and_loses_nothing(tmp_path: Path) -> None:
    seconds = float(os.environ.get("KAYIT_CHAOS_SECONDS", "75"))
    seed = os.environ.get("KAYIT_CHAOS_SEED", "2026")
    command = [
        sys.executable, "-m", "kayit", "chaos", "--network", "netns",
        "--seconds", str(seconds), "--seed", seed, "--out", str(tmp_path),
        "--members", "4", "--tolerance", str(TOLERANCE),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 300, cwd=tmp_path
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    report = (run_dir / "report.txt").read_text()
    assert "acknowledged writes lost: 0\n" in report
    assert "linearizability: 20 of 20 keys ok" in report
    faults = json.loads((run_dir / "faults.json").read_text())
    assert {f["kind"] for f in faults} == set(FaultKind)  # every kind was injected
    assert _most_at_once(faults) <= TOLERANCE
    kills = sum(1 for f in faults if f["kind"] == FaultKind.LEADER_KILL)
    assert f"failover after leader kills: {kills} kills, median " in report
    assert (run_dir / "timeline.png").stat().st_size > 10_000
    ops = (run_dir / "history.jsonl").read_text().count('"type": "ok"')
    assert ops > 1000


def _namespaces_of(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"kayit-{pid}-")]


@pytest.mark.cluster
@pytest.mark.host_wide
def test_sigterm_stops_the_nodes_and_removes_the_namespaces(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "kayit", "chaos", "--network", "netns",
        "--seconds", "600", "--seed", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    chaos = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert chaos.stdout is not None
        printed: list[str] = []
        for line in chaos.stdout:
            printed.append(line)
            if "of load and faults" in line:
                break
        started = bool(printed) and "of load and faults" in printed[-1]
        assert started, "the run ended before its load began:\n" + "".join(printed)
        nodes = subprocess.run(
            ["pgrep", "-P", str(chaos.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(nodes) >= 3
        chaos.terminate()
        assert chaos.wait(timeout=60) == 143
    finally:
        chaos.kill()
        chaos.wait()
        left = _namespaces_of(chaos.pid)
        for name in left:  # only when the run failed to remove them itself
            subprocess.run(["ip", "netns", "del", name], check=False)
    assert left == []
    for pid in nodes:
        assert not Path(f"/proc/{pid}").exists(), f"node {pid} outlived the chaos run"
