"""Waiting in async tests for something that happens in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Closing(Protocol):
    async def close(self) -> None: ...


_C = TypeVar("_C", bound=Closing)


def run_closing(
    make: Callable[[], _C], scenario: Callable[[_C], Awaitable[None]], timeout: float = 25.0
) -> None:
    """Run ``scenario`` on what ``make`` builds, within ``timeout`` seconds; whatever happens,
    it is closed after, and no task may be left behind."""

    async def main() -> None:
        subject = make()
        try:
            await asyncio.wait_for(scenario(subject), timeout)
        finally:
            await subject.close()
        current = asyncio.current_task()
        assert [task for task in asyncio.all_tasks() if task is not current] == []

    asyncio.run(main())
