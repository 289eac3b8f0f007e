"""The node's periodic report: what it says, and that only what changed is logged."""

from __future__ import annotations

import logging

import pytest

from kayit.cluster.leader import MemberCounts
from kayit.cluster.repair import RepairProgress
from kayit.report import ChangeReport, ReportLine, leader_report, member_report
from kayit.storage.store import SyncHealth

GOOD = SyncHealth()


def report(
    messages: int = 3,
    alive: bool = True,
    under_replicated: int = 0,
    repair: RepairProgress | None = None,
    sync: SyncHealth = GOOD,
) -> list[ReportLine]:
    members = [
        MemberCounts("M2", "h:2", alive, 3, True),
        MemberCounts("M3", "h:3", True, 3, False),
    ]
    return leader_report(
        "h:1", 4, messages, 1, members, own_disk=messages,
        under_replicated=under_replicated, repair=repair or RepairProgress(), sync=sync,
    )  # fmt: skip


def texts(lines: list[ReportLine]) -> list[str]:
    return [line.text for line in lines]


def test_what_a_leader_reports() -> None:
    assert texts(report()) == [
        "leader h:1 (term 4): 3 messages (3 on own disk), TOLERANCE=1, 2 of 2 other nodes alive",
        "member h:2 alive, 3 assigned, voter, node M2",
        "member h:3 alive, 3 assigned, learner, node M3",
    ]
    assert texts(member_report("h:2", 3, None, GOOD)) == [
        "member h:2: 3 messages on disk; leader (none known)"
    ]


def test_an_idle_node_reports_once() -> None:
    changes = ChangeReport()
    assert len(changes.changes(report())) == 3  # the first report: everything
    for _ in range(5):
        assert changes.changes(report()) == []


def test_only_the_lines_that_changed() -> None:
    changes = ChangeReport()
    changes.changes(report())
    assert texts(changes.changes(report(messages=4))) == [
        "leader h:1 (term 4): 4 messages (4 on own disk), TOLERANCE=1, 2 of 2 other nodes alive"
    ]
    assert texts(changes.changes(report(messages=4, alive=False))) == [
        "leader h:1 (term 4): 4 messages (4 on own disk), TOLERANCE=1, 1 of 2 other nodes alive",
        "member h:2 DEAD, 3 assigned, voter, node M2",
    ]


def test_the_repair_line_goes_once_repair_is_done() -> None:
    changes = ChangeReport()
    changes.changes(report())
    under_way = RepairProgress(under_replicated=10, repaired=4)
    assert texts(changes.changes(report(under_replicated=6, repair=under_way))) == [
        "under-replicated: 6 (repaired 4 of 10 this pass)"
    ]
    finished = RepairProgress(under_replicated=10, repaired=10)
    for _ in range(3):  # nothing left to repair: no line, and nothing else changed
        assert changes.changes(report(repair=finished)) == []
    # A failing disk is a warning, said again as its count of failures grows.
    failing = report(sync=SyncHealth(1, "EIO"))
    (disk,) = changes.changes(failing)
    assert (disk.text, disk.level) == (
        "disk sync FAILING: EIO (1 failed syncs since start)", logging.WARNING,
    )  # fmt: skip


def test_logged_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    changes = ChangeReport()
    with caplog.at_level(logging.INFO, logger="kayit.report"):
        changes.log(report())
        changes.log(report())
    assert [r.getMessage() for r in caplog.records] == texts(report())
