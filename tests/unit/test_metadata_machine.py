"""MetadataMachine on its own, and under a RaftDriver: every entry counts for its term, and
configuration changes commit through the driver."""

from __future__ import annotations

import asyncio
import random

import pytest

from kayit.consensus.driver import DriverConfig, RaftDriver
from kayit.consensus.membership import ConfigChange, ConfigChangeError, ConfigChangeInProgress
from kayit.consensus.messages import Entry, EntryKind, Message
from kayit.consensus.node import RaftNode
from kayit.consensus.storage import MemoryStorage
from kayit.metadata.commands import Formed, NodeAdded, Placed, PlacedItem
from kayit.metadata.machine import MetadataMachine
from kayit.version import Version


def command(index: int, term: int, data: bytes) -> Entry:
    return Entry(index, term, data)


def test_every_kind_of_entry_moves_the_applied_index_and_term() -> None:
    applied: list[int] = []
    machine = MetadataMachine(on_apply=lambda: applied.append(machine.metadata.applied_index))
    assert machine.apply(command(1, 1, Formed("c", 1).encode())) == (True,)
    assert machine.apply(command(2, 1, NodeAdded("a", "h:1").encode())) == (True,)
    assert machine.apply(Entry(3, 2, kind=EntryKind.NO_OP)) == ()
    assert machine.metadata.last_leader_term == 2
    assert machine.apply(Entry(4, 3, b'{"voters":["a"],"learners":[]}', EntryKind.CONFIG)) == ()
    assert (machine.metadata.applied_index, machine.metadata.last_leader_term) == (4, 3)
    assert applied == [1, 2, 3, 4]


def test_a_restored_snapshot_is_the_state_it_was_taken_of() -> None:
    machine = MetadataMachine()
    machine.apply(command(1, 1, Formed("c", 1).encode()))
    machine.apply(command(2, 1, NodeAdded("a", "h:1").encode()))
    item = PlacedItem("m", Version(1, 1), 42, ("a",))
    assert machine.apply(command(3, 1, Placed((item,)).encode())) == (True,)
    restores: list[int] = []
    copy = MetadataMachine(on_apply=lambda: restores.append(1))
    copy.restore(machine.snapshot()())
    assert copy.metadata == machine.metadata and restores == [1]
    assert copy.metadata.entry("m") == machine.metadata.entry("m")


def formed_with_members(machine: MetadataMachine) -> None:
    machine.apply(command(1, 1, Formed("c", 1).encode()))
    machine.apply(command(2, 1, NodeAdded("a", "h:1").encode()))
    machine.apply(command(3, 1, NodeAdded("b", "h:2").encode()))


def test_on_placed_gets_the_items_that_took_effect_as_they_were_listed() -> None:
    placed: list[list[PlacedItem]] = []
    machine = MetadataMachine(on_placed=placed.append)
    formed_with_members(machine)
    newer = PlacedItem("m", Version(2, 1), 1, ("b", "a", "b"))
    assert machine.apply(command(4, 2, Placed((newer,)).encode())) == (True,)
    older = PlacedItem("m", Version(1, 9), 2, ("a",))  # older than the indexed version
    other = PlacedItem("n", Version(2, 2), 3, ("a",))
    assert machine.apply(command(5, 2, Placed((older, other)).encode())) == (False, True)
    assert placed == [[newer], [other]]


def test_on_placed_is_not_called_when_no_item_took_effect() -> None:
    placed: list[list[PlacedItem]] = []
    machine = MetadataMachine(on_placed=placed.append)
    early = PlacedItem("m", Version(1, 1), 1, ("a",))
    assert machine.apply(command(1, 1, Placed((early,)).encode())) == (False,)  # not formed
    machine.apply(command(2, 1, Formed("c", 1).encode()))
    machine.apply(command(3, 1, NodeAdded("a", "h:1").encode()))
    later = early._replace(version=Version(2, 1))
    assert machine.apply(command(4, 2, Placed((later,)).encode())) == (True,)
    assert machine.apply(command(5, 2, Placed((early,)).encode())) == (False,)  # older
    assert placed == [[later]]


def test_a_command_other_than_placed_calls_no_placed_listener() -> None:
    placed: list[list[PlacedItem]] = []
    applied: list[int] = []
    machine = MetadataMachine(
        on_apply=lambda: applied.append(machine.metadata.applied_index), on_placed=placed.append
    )
    formed_with_members(machine)
    machine.apply(Entry(4, 2, kind=EntryKind.NO_OP))
    machine.apply(Entry(5, 3, b'{"voters":["a"],"learners":[]}', EntryKind.CONFIG))
    assert applied == [1, 2, 3, 4, 5]
    assert placed == []


def test_a_restored_snapshot_calls_no_placed_listener() -> None:
    machine = MetadataMachine()
    formed_with_members(machine)
    item = PlacedItem("m", Version(1, 1), 42, ("a", "b"))
    assert machine.apply(command(4, 1, Placed((item,)).encode())) == (True,)
    placed: list[list[PlacedItem]] = []
    copy = MetadataMachine(on_placed=placed.append)
    copy.restore(machine.snapshot()())
    assert copy.metadata.entry("m") == machine.metadata.entry("m")
    assert placed == []


class NoTransport:
    def send(self, message: Message) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_driver_gives_the_machine_its_no_op_and_commits_one_change_at_a_time() -> None:
    async def main() -> None:
        machine = MetadataMachine()
        node = RaftNode("a", ["a"], random.Random(1))
        driver = RaftDriver(
            node, MemoryStorage(), NoTransport(), machine, DriverConfig(tick_seconds=0.01)
        )
        driver.start()
        try:
            # Awaited directly, not in a task, so the wait begins before the driver's loop runs:
            # as the only voter, it leads at its first step.
            async with asyncio.timeout(2.0):
                while not driver.is_leader:
                    await driver.wait_for_change()
            await driver.read_barrier()
            # Nothing was proposed: the new leader's no-op alone carried its term here.
            assert machine.metadata.last_leader_term == driver.term > 0
            first = asyncio.create_task(driver.change_config(ConfigChange.add_learner("b")))
            second = asyncio.create_task(driver.change_config(ConfigChange.add_learner("c")))
            await first
            with pytest.raises(ConfigChangeInProgress):
                await second
            assert node.cluster_config.learners == {"b"}
            await driver.change_config(ConfigChange.add_learner("c"))
            with pytest.raises(ConfigChangeError):
                await driver.change_config(ConfigChange.promote("a"))
            assert node.cluster_config.learners == {"b", "c"}
            assert machine.metadata.applied_index == node.applied
        finally:
            await driver.stop()

    asyncio.run(main())
