"""The supervisor of the node's long-lived tasks: work that raises is logged and restarted after
pauses that grow, up to a cap, and start over after a good run; cancelling stops it."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from kayit.supervision import Backoff, keep_running, supervise

BACKOFF = Backoff(first=0.5, cap=4.0, healthy_after=60.0)


class FailingWork:
    """Work that raises on its first ``failures`` starts, then returns; each start takes
    ``runs_for`` seconds of the test's clock."""

    def __init__(self, failures: int, clock: list[float], runs_for: float = 0.0) -> None:
        self.failures = failures
        self.starts = 0
        self._clock = clock
        self._runs_for = runs_for

    async def __call__(self) -> None:
        self.starts += 1
        self._clock[0] += self._runs_for
        if self.starts <= self.failures:
            raise OSError(errno.EMFILE, "Too many open files")


def run_supervised(work: FailingWork, clock: list[float]) -> list[float]:
    """Run ``work`` under ``keep_running`` until it returns; the pauses it took."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    asyncio.run(
        keep_running("the work", work, BACKOFF, clock=lambda: clock[0], sleep=sleep),
    )
    return pauses


def test_work_that_fails_twice_is_restarted_until_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    work = FailingWork(failures=2, clock=clock)
    with caplog.at_level(logging.ERROR, logger="kayit.supervision"):
        pauses = run_supervised(work, clock)
    assert work.starts == 3
    assert pauses == [0.5, 1.0]
    # The cause is logged every time; its traceback once, then a line per repeat.
    first, second = caplog.records
    assert first.exc_info is not None and "the work failed" in first.getMessage()
    assert second.exc_info is None
    assert "again (2 in a row)" in second.getMessage()
    assert "Too many open files" in second.getMessage()


def test_the_pause_doubles_up_to_the_cap() -> None:
    clock = [0.0]
    pauses = run_supervised(FailingWork(failures=6, clock=clock), clock)
    assert pauses == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_run_that_went_well_for_a_while_starts_the_pauses_over() -> None:
    clock = [0.0]
    # Every start runs past healthy_after before it fails: no failure follows another at once.
    work = FailingWork(failures=4, clock=clock, runs_for=BACKOFF.healthy_after)
    assert run_supervised(work, clock) == [0.5] * 4


def test_a_new_cause_gets_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    causes = iter([OSError("one"), OSError("one"), ValueError("two")])

    async def work() -> None:
        cause = next(causes, None)
        if cause is not None:
            raise cause

    async def no_pause(_seconds: float) -> None:
        return

    with caplog.at_level(logging.ERROR, logger="kayit.supervision"):
        asyncio.run(keep_running("the work", work, BACKOFF, sleep=no_pause))
    assert [record.exc_info is not None for record in caplog.records] == [True, False, True]


def test_cancelling_stops_the_work_and_its_pause() -> None:
    async def main() -> tuple[int, int]:
        started = asyncio.Event()
        starts = [0, 0]

        async def runs_forever() -> None:
            starts[0] += 1
            started.set()
            await asyncio.Event().wait()

        async def fails() -> None:
            starts[1] += 1
            raise RuntimeError("broken")

        running = supervise("running", runs_forever)
        pausing = supervise("pausing", fails, Backoff(first=3600.0))
        await started.wait()
        while starts[1] == 0:
            await asyncio.sleep(0)
        for task in (running, pausing):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.cancelled()
        return starts[0], starts[1]

    assert asyncio.run(asyncio.wait_for(main(), 5.0)) == (1, 1)


def test_work_that_returns_ends_its_task() -> None:
    async def main() -> None:
        done: list[bool] = []

        async def once() -> None:
            done.append(True)

        await supervise("once", once)
        assert done == [True]

    asyncio.run(main())
