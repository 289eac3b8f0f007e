"""What a node's client connections share: connection slots, and the budget of unfinished
requests, which refuses the connection holding the most."""

from __future__ import annotations

import resource

import pytest

from kayit.server.client_limits import ClientSlots, PartialLines, fit_open_files


class Holder:
    def __init__(self, name: str, refused: list[tuple[str, int]]) -> None:
        self.name = name
        self._refused = refused

    def refuse_partial(self, held: int) -> None:
        self._refused.append((self.name, held))


def test_the_largest_holder_is_refused_once_the_budget_is_passed() -> None:
    refused: list[tuple[str, int]] = []
    budget = PartialLines(100)
    small, large, growing = (Holder(n, refused) for n in ("small", "large", "growing"))
    budget.hold(small, 10)
    budget.hold(large, 60)
    budget.hold(growing, 30)
    assert budget.used == 100 and refused == []  # at the budget is not past it
    budget.hold(growing, 31)
    assert refused == [("large", 60)]
    assert budget.used == 41
    budget.hold(large, 0)  # a refused holder letting go counts nothing twice
    assert budget.used == 41


def test_refusals_go_on_until_the_budget_holds() -> None:
    refused: list[tuple[str, int]] = []
    budget = PartialLines(100)
    holders = [Holder(f"h{n}", refused) for n in range(5)]
    for n, holder in enumerate(holders):
        budget.hold(holder, 20 + n)
    assert refused == [("h4", 24)]
    budget.hold(holders[0], 90)  # alone past the budget: only it goes
    assert refused == [("h4", 24), ("h0", 90)]
    assert budget.used == 21 + 22 + 23


def test_finished_and_released_requests_free_their_bytes() -> None:
    budget = PartialLines(100)
    holder = Holder("h", [])
    budget.hold(holder, 50)
    budget.hold(holder, 0)
    assert budget.used == 0
    budget.hold(holder, 70)
    budget.release(holder)
    budget.release(holder)
    assert budget.used == 0


def test_client_slots() -> None:
    slots = ClientSlots(2)
    assert slots.take() and slots.take()
    assert not slots.take()
    slots.give()
    assert slots.take()


def test_more_clients_than_files_are_cut_down_to_what_fits() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit of open files here")
    assert fit_open_files(10) == 10
    fitting = fit_open_files(hard + 1000)
    assert 0 < fitting < hard
