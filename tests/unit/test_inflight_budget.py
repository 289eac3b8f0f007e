"""The gateway's byte budget for SETs under way: who waits, and when they are let go."""

from __future__ import annotations

from kayit.server.gateway import ClientConnection, InflightBudget


class Waiter(ClientConnection):
    """Only the budget's side of a connection: counts how often it was told to go on."""

    def __init__(self) -> None:  # no transport, no leader: nothing else is exercised
        self.freed = 0

    def budget_freed(self) -> None:
        self.freed += 1


def test_exhausted_only_past_the_limit() -> None:
    budget = InflightBudget(limit=100)
    budget.take(100)
    assert not budget.exhausted
    budget.take(1)
    assert budget.exhausted


def test_waiters_are_let_go_once_half_the_budget_is_free_and_only_once() -> None:
    budget = InflightBudget(limit=100)
    first, second = Waiter(), Waiter()
    budget.take(150)
    budget.wait(first)
    budget.wait(second)
    budget.give(60)  # 90 in use: under the limit, not yet under half
    assert (first.freed, second.freed) == (0, 0)
    budget.give(40)  # 50 in use
    assert (first.freed, second.freed) == (1, 1)
    budget.give(50)
    assert (first.freed, second.freed) == (1, 1)
    assert budget.used == 0
