"""Coalesce concurrent requests into batches: the road from ~1k to ~100k operations/s.

Disk syncs and gRPC calls cost about the same for one item as for a hundred, so every caller
awaits ``submit`` for its own item while a drain task hands whole lists to ``flush``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Calls ``flush(items)`` with everything submitted since the last call began.

    ``flush`` returns one result per item, in order; if it raises, every item of that batch
    gets the exception. At most ``in_flight`` flushes run at once; a batch holds at most
    ``max_items`` items and, past its first item, at most ``max_bytes`` by ``weigh``. An item
    whose caller stopped waiting (cancelled) before its batch was taken is never flushed.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_items: int = 512,
        max_bytes: int = 4 * 1024 * 1024,
        weigh: Callable[[T], int] = lambda _item: 0,
        in_flight: int = 1,
    ) -> None:
        self._flush = flush
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._weigh = weigh
        self._in_flight = in_flight
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._drains: set[asyncio.Task[Any]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._drains) < self._in_flight:
            self._drains.add(asyncio.create_task(self._drain()))
        return await future

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def _drain(self) -> None:
        try:
            while batch := self._take():
                try:
                    results = await self._flush([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(results)} results for {len(batch)} items")
                except Exception as error:  # every waiter learns why its batch failed
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            # Leave the set here, not in a done callback: a callback runs a loop turn late,
            # and a submit in between would wait for a drain that has already finished.
            task = asyncio.current_task()
            if task is not None:
                self._drains.discard(task)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        size = 0
        while self._pending and len(batch) < self._max_items:
            item, future = self._pending[0]
            if future.done():  # its caller gave up waiting
                self._pending.popleft()
                continue
            weight = self._weigh(item)
            if batch and size + weight > self._max_bytes:
                break
            size += weight
            batch.append(self._pending.popleft())
        return batch
