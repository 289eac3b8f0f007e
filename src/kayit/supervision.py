"""Work that lives as long as the node, kept alive: a task that raises is logged and restarted.

A background task that dies leaves its work undone without a word until the node stops (a
store that no longer syncs, a leader that no longer repairs). ``supervise`` runs such work in a
task that, whenever the work raises, logs why (the traceback the first time, one line for each
repeat of the same failure) and starts it again after a pause. The pause doubles with every
failure in a row, up to a cap, and starts over once the work ran well for a while. Work that
returns is done: the task ends. Cancelling the task stops the work at once, also during a pause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Work = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 0.1  # seconds before the first restart
    cap: float = 30.0  # the longest pause
    # Work that ran this long before it failed counts as having run well: the next pause is
    # ``first`` again.
    healthy_after: float = 60.0


def supervise(name: str, work: Work, backoff: Backoff | None = None) -> asyncio.Task[None]:
    """A task running ``work()`` (a fresh coroutine at each start) until it returns or the
    task is cancelled; ``name`` names it in the log."""
    return asyncio.get_running_loop().create_task(
        keep_running(name, work, backoff or Backoff()), name=name
    )


async def keep_running(
    name: str,
    work: Work,
    backoff: Backoff,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """``supervise``'s loop, for a caller that is a task already."""
    pause = backoff.first
    in_a_row = 0
    last_cause: tuple[type[BaseException], str] | None = None
    while True:
        started = clock()
        try:
            await work()
            return
        except Exception as error:
            if clock() - started >= backoff.healthy_after:
                pause, in_a_row = backoff.first, 0
            in_a_row += 1
            cause = (type(error), str(error))
            if cause != last_cause:
                log.error("%s failed; restarting it in %.1f s", name, pause, exc_info=error)
            else:
                log.error(
                    "%s failed again (%d in a row): %s: %s; restarting it in %.1f s",
                    name,
                    in_a_row,
                    type(error).__name__,
                    error,
                    pause,
                )
            last_cause = cause
        await sleep(pause)
        pause = min(2 * pause, backoff.cap)
