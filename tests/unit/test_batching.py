"""Batcher: coalescing, limits, result routing, errors and concurrent flushes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kayit.batching import Batcher

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]], timeout: float = 5.0) -> T:
    """Run ``main`` on a fresh loop; a hang becomes a TimeoutError instead of a stuck suite.

    asyncio.timeout does not add a task between ``main`` and the code under test, so it does not
    change how callbacks interleave (asyncio.wait_for would).
    """

    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return asyncio.run(guarded())


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until nothing more can progress without outside help."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Recorder:
    """A flush that records its batches and answers item * 10."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        return [item * 10 for item in items]


def test_items_submitted_in_the_same_tick_share_one_flush() -> None:
    flush = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(flush)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(10))))

    assert run(main) == [i * 10 for i in range(10)]
    assert flush.batches == [list(range(10))]


def test_single_item() -> None:
    flush = Recorder()

    async def main() -> int:
        return await Batcher(flush).submit(7)

    assert run(main) == 70
    assert flush.batches == [[7]]


def test_items_arriving_during_a_flush_form_the_next_batch() -> None:
    flush = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(flush)
        first = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)  # the first flush starts with 0, 1, 2
        second = [asyncio.ensure_future(batcher.submit(i)) for i in range(3, 5)]
        return list(await asyncio.gather(*first, *second))

    assert run(main) == [0, 10, 20, 30, 40]
    assert flush.batches == [[0, 1, 2], [3, 4]]


def test_max_items_splits_batches() -> None:
    flush = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(flush, max_items=3)
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(8))))

    assert run(main) == [i * 10 for i in range(8)]
    assert flush.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_max_bytes_splits_batches_but_always_takes_the_first_item() -> None:
    batches: list[list[bytes]] = []

    async def flush(items: list[bytes]) -> list[int]:
        batches.append(list(items))
        return [len(item) for item in items]

    items = [b"a" * 4, b"b" * 4, b"c" * 4, b"d" * 20, b"e", b"f", b"g" * 8, b"h" * 2]

    async def main() -> list[int]:
        batcher = Batcher(flush, max_bytes=10, weigh=len)
        return list(await asyncio.gather(*(batcher.submit(item) for item in items)))

    assert run(main) == [4, 4, 4, 20, 1, 1, 8, 2]
    assert [[len(item) for item in batch] for batch in batches] == [
        [4, 4],
        [4],
        [20],  # heavier than max_bytes on its own: still flushed, alone
        [1, 1, 8],  # exactly max_bytes
        [2],
    ]


def test_max_items_and_max_bytes_together() -> None:
    flush = Recorder()

    async def main() -> None:
        batcher = Batcher(flush, max_items=2, max_bytes=100, weigh=lambda item: item)
        await asyncio.gather(*(batcher.submit(i) for i in [1, 1, 1, 60, 50, 1]))

    run(main)
    assert flush.batches == [[1, 1], [1, 60], [50, 1]]


def test_results_go_back_in_order_to_the_right_callers() -> None:
    async def flush(items: list[str]) -> list[str]:
        await asyncio.sleep(0)
        return [f"done:{item}" for item in items]

    async def main() -> list[str]:
        batcher = Batcher(flush, max_items=4)
        return list(await asyncio.gather(*(batcher.submit(f"k{i}") for i in range(11))))

    assert run(main) == [f"done:k{i}" for i in range(11)]


def test_each_caller_gets_its_own_result_when_flush_reorders_work() -> None:
    async def flush(items: list[int]) -> list[int]:
        results = {item: -item for item in sorted(items, reverse=True)}  # computed out of order
        return [results[item] for item in items]

    async def main() -> list[int]:
        batcher = Batcher(flush)
        return list(await asyncio.gather(*(batcher.submit(i) for i in [5, 3, 9, 1])))

    assert run(main) == [-5, -3, -9, -1]


def test_exception_reaches_every_caller_of_the_batch_and_next_batch_works() -> None:
    calls: list[list[int]] = []

    async def main() -> tuple[list[BaseException | int], list[int], int]:
        release = asyncio.Event()

        async def flush(items: list[int]) -> list[int]:
            calls.append(list(items))
            if len(calls) == 1:
                await release.wait()
                raise OSError("disk full")
            return [item + 100 for item in items]

        batcher = Batcher(flush)
        failing = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await settle()
        assert calls == [[0, 1, 2]]
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(3, 5)]
        await settle()
        assert batcher.queued == 2
        release.set()
        first = list(await asyncio.gather(*failing, return_exceptions=True))
        second = list(await asyncio.gather(*queued))
        await settle()
        later = await batcher.submit(9)
        return first, second, later

    first, second, later = run(main)
    assert all(isinstance(result, OSError) for result in first)
    assert len({id(result) for result in first}) == 1  # the same exception, for everyone
    assert str(first[0]) == "disk full"
    assert second == [103, 104]
    assert later == 109
    assert calls == [[0, 1, 2], [3, 4], [9]]


def test_failed_batch_does_not_affect_other_callers_results() -> None:
    async def flush(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return items

    async def main() -> list[int | BaseException]:
        batcher = Batcher(flush, max_items=2)
        return list(
            await asyncio.gather(
                *(batcher.submit(i) for i in [1, 2, 13, 4, 5, 6]), return_exceptions=True
            )
        )

    results = run(main)
    assert results[:2] == [1, 2]
    assert all(isinstance(result, ValueError) for result in results[2:4])
    assert results[4:] == [5, 6]


def _concurrency(in_flight: int, items: int) -> tuple[int, int, int, list[int]]:
    """Peak concurrent flushes, flushes running and items queued while all flushes are
    blocked, and the results once released."""
    active = 0
    peak = 0

    async def main() -> tuple[int, int, list[int]]:
        nonlocal active, peak
        release = asyncio.Event()

        async def flush(batch: list[int]) -> list[int]:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            try:
                await release.wait()
                return [item * 2 for item in batch]
            finally:
                active -= 1

        batcher = Batcher(flush, max_items=1, in_flight=in_flight)
        waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(items)]
        await settle()
        running, queued = active, batcher.queued
        release.set()
        return running, queued, list(await asyncio.gather(*waiting))

    running, queued, results = run(main)
    return peak, running, queued, results


def test_in_flight_two_allows_two_concurrent_flushes_but_not_three() -> None:
    peak, running, queued, results = _concurrency(in_flight=2, items=5)
    assert running == 2
    assert queued == 3
    assert peak == 2
    assert results == [0, 2, 4, 6, 8]


def test_in_flight_one_flushes_one_at_a_time() -> None:
    peak, running, queued, results = _concurrency(in_flight=1, items=4)
    assert (peak, running, queued) == (1, 1, 3)
    assert results == [0, 2, 4, 6]


def test_in_flight_three() -> None:
    peak, running, queued, _ = _concurrency(in_flight=3, items=5)
    assert (peak, running, queued) == (3, 3, 2)


def test_queued_counts_waiting_items() -> None:
    async def main() -> tuple[int, int]:
        release = asyncio.Event()

        async def flush(items: list[int]) -> list[int]:
            await release.wait()
            return items

        batcher = Batcher(flush)
        assert batcher.queued == 0
        first = asyncio.ensure_future(batcher.submit(0))
        await settle()
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 4)]
        await settle()
        during = batcher.queued
        release.set()
        await asyncio.gather(first, *rest)
        return during, batcher.queued

    assert run(main) == (3, 0)


def test_sequential_submits_after_the_drain_has_finished() -> None:
    flush = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(flush)
        results = []
        for i in range(3):
            results.append(await batcher.submit(i))
            await asyncio.sleep(0)  # lets the finished drain task leave Batcher._drains
        return results

    assert run(main) == [0, 10, 20]
    assert flush.batches == [[0], [1], [2]]


def test_submit_immediately_after_a_result_is_flushed() -> None:
    flush = Recorder()

    async def main() -> list[int]:
        batcher = Batcher(flush)
        return [await batcher.submit(1), await batcher.submit(2)]

    assert run(main, timeout=0.5) == [10, 20]


def test_items_whose_callers_gave_up_while_queued_are_never_flushed() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def slow_flush(items: list[int]) -> list[int]:
        batches.append(list(items))
        await release.wait()
        return items

    async def main() -> list[int]:
        batcher = Batcher(slow_flush)
        first = asyncio.create_task(batcher.submit(1))
        await settle()  # 1 is being flushed; what follows waits for the next batch
        queued = {n: asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)}
        await settle()
        queued[2].cancel()
        queued[4].cancel()
        release.set()
        results = [await first, await queued[3]]

        release.clear()
        last = asyncio.create_task(batcher.submit(5))
        await settle()
        alone = asyncio.create_task(batcher.submit(6))
        await settle()
        alone.cancel()
        release.set()
        results.append(await last)
        await settle()
        return results

    assert run(main) == [1, 3, 5]
    assert batches == [[1], [3], [5]]
