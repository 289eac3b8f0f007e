"""Leader logic over a fake member network: replacement, undo of failed SETs, versions."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kayit.cluster.leader import ClusterError, Leader
from kayit.cluster.membership import Membership
from kayit.cluster.transport import Copy, MemberUnreachable
from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.store import MessageStore
from kayit.version import Version

T = TypeVar("T")
MEMBERS = ["m1", "m2", "m3", "m4"]


class FakeMembers:
    """Members as dicts; a member in ``down`` fails every call, like a killed process."""

    def __init__(self) -> None:
        self.copies: dict[str, dict[str, Copy]] = {m: {} for m in MEMBERS}
        self.down: set[str] = set()
        self.calls: Counter[str] = Counter()

    async def store_many(self, address: str, copies: list[Copy]) -> None:
        await asyncio.sleep(0)
        self.calls[address] += 1
        if address in self.down:
            raise MemberUnreachable(f"{address} is down")
        held = self.copies[address]
        for copy in copies:
            current = held.get(copy.message_id)
            if current is None or current.version <= copy.version:
                held[copy.message_id] = copy

    async def retrieve(self, address: str, message_id: str) -> Copy | None:
        if address in self.down:
            raise MemberUnreachable(f"{address} is down")
        return self.copies[address].get(message_id)

    async def inventory(self, address: str, verify: bool) -> list[tuple[str, Version]]:
        if address in self.down:
            raise MemberUnreachable(f"{address} is down")
        return [(key, copy.version) for key, copy in self.copies[address].items()]

    async def delete(self, address: str, copies: list[tuple[str, Version]]) -> None:
        if address in self.down:
            raise MemberUnreachable(f"{address} is down")
        for key, version in copies:
            held = self.copies[address].get(key)
            if held is not None and held.version <= version:
                del self.copies[address][key]

    def holders(self, message_id: str) -> list[str]:
        return [m for m in MEMBERS if message_id in self.copies[m]]


def run(tmp_path: Path, scenario: Callable[[Leader, FakeMembers], Awaitable[T]]) -> T:
    async def main() -> T:
        members = FakeMembers()
        membership = Membership(dead_after=3600)
        for address in MEMBERS:
            membership.heard_from(address, 0)
        store = MessageStore(
            DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER), keep_versions=False
        )
        await store.open()
        leader = Leader(store=store, membership=membership, transport=members, tolerance=2, term=1)
        try:
            async with asyncio.timeout(10):
                return await scenario(leader, members)
        finally:
            await store.close()

    return asyncio.run(main())


def test_set_stores_on_tolerance_members_and_the_leader(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("a", b"one")
        assert members.holders("a") == ["m1", "m2"]
        assert (tmp_path / "messages" / "a.msg").read_bytes() == b"one"
        assert await leader.get("a") == b"one"
        assert await leader.get("never") is None

    run(tmp_path, scenario)


def test_a_failing_member_is_replaced_and_marked_dead(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        members.down.add("m1")
        await leader.set("a", b"one")
        assert members.holders("a") == ["m2", "m3"]
        assert leader.index.get("a") is not None
        assert not leader.membership.is_alive("m1")
        assert leader.index.load["m1"] == 0

    run(tmp_path, scenario)


def test_too_few_live_members_fails_before_anything_is_written(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        for address in ["m1", "m2", "m3"]:
            leader.membership.mark_failed(address)
        with pytest.raises(ClusterError, match="only 1 live members"):
            await leader.set("a", b"one")
        assert sum(members.calls.values()) == 0
        assert not (tmp_path / "messages" / "a.msg").exists()

    run(tmp_path, scenario)


def test_a_new_id_whose_set_failed_part_way_stays_unseen(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        members.down.update(["m2", "m3", "m4"])
        with pytest.raises(ClusterError):
            await leader.set("a", b"one")
        assert members.holders("a") == ["m1"]  # an orphan copy, not in the index
        assert await leader.get("a") is None
        assert sum(leader.index.load.values()) == 0

    run(tmp_path, scenario)


def test_an_overwrite_that_failed_part_way_is_undone(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("a", b"old")
        before = leader.index.get("a")
        members.down.update(["m2", "m3", "m4"])
        with pytest.raises(ClusterError):
            await leader.set("a", b"new")
        assert leader.index.get("a") == before
        assert members.copies["m1"]["a"].message == b"old"
        assert await leader.get("a") == b"old"
        (tmp_path / "messages" / "a.msg").unlink()  # now only m1 can answer
        assert await leader.get("a") == b"old"

    run(tmp_path, scenario)


def test_reads_fall_back_to_holders_in_order_and_fail_when_none_answers(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("a", b"one")
        own = tmp_path / "messages" / "a.msg"
        own.unlink()
        members.down.add("m1")
        assert await leader.get("a") == b"one"
        assert own.read_bytes() == b"one"  # the leader restored its copy from m2
        own.write_bytes(b"ONE")  # damaged: fails the checksum, so it is not served
        members.down.add("m2")
        with pytest.raises(ClusterError, match="no holder"):
            await leader.get("a")

    run(tmp_path, scenario)


def test_concurrent_sets_spread_evenly_and_the_last_write_wins(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await asyncio.gather(*(leader.set(f"k{n}", b"x") for n in range(100)))
        assert Counter(h for n in range(100) for h in members.holders(f"k{n}")) == {
            m: 50 for m in MEMBERS
        }
        await asyncio.gather(*(leader.set("same", f"v{n}".encode()) for n in range(20)))
        assert await leader.get("same") == b"v19"
        for holder in members.holders("same"):
            assert members.copies[holder]["same"].message == b"v19"

    run(tmp_path, scenario)


def test_a_get_waits_for_a_set_of_the_same_id_under_way(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        writing = asyncio.create_task(leader.set("a", b"fresh"))
        await asyncio.sleep(0)
        assert await leader.get("a") == b"fresh"
        await writing

    run(tmp_path, scenario)


def test_repair_copies_a_dead_members_messages_to_a_live_one(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await asyncio.gather(*(leader.set(f"k{n}", f"v{n}".encode()) for n in range(8)))
        lost = {k for k in (f"k{n}" for n in range(8)) if "m1" in members.holders(k)}
        members.down.add("m1")
        leader.membership.mark_failed("m1")
        assert sorted(leader.index.held_by({"m1"})) == sorted(lost)
        for key in lost:
            assert await leader.repair(key)
        assert leader.index.held_by({"m1"}) == {}
        assert leader.index.load["m1"] == 0
        for key in lost:
            entry = leader.index.get(key)
            assert entry is not None
            assert len(entry.holders) == 2
            for holder in entry.holders:
                assert members.copies[holder][key].message == key.replace("k", "v").encode()
                assert members.copies[holder][key].version == entry.version

    run(tmp_path, scenario)


def test_reconcile_keeps_current_copies_deletes_the_rest_and_repairs_lost_ones(
    tmp_path: Path,
) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("current", b"c")  # on m1, m2
        await leader.set("moved", b"m")  # on m3, m4
        await leader.set("lost", b"l")  # on m1, m2
        m1 = members.copies["m1"]
        m1["orphan"] = Copy("orphan", b"never acknowledged", Version(1, 99))
        m1["moved"] = Copy("moved", b"m", members.copies["m3"]["moved"].version)
        del m1["lost"]

        expected = leader.expected_on("m1")
        inventory = await members.inventory("m1", verify=True)
        deleted = await leader.reconcile("m1", expected, inventory)

        assert deleted == 2
        assert sorted(members.copies["m1"]) == ["current"]
        assert leader.under_replicated == {"lost"}
        lost = leader.index.get("lost")
        assert lost is not None
        assert lost.holders == ("m2",)
        assert await leader.repair("lost")
        repaired = leader.index.get("lost")
        assert repaired is not None
        assert len(repaired.holders) == 2
        assert all(members.copies[h]["lost"].message == b"l" for h in repaired.holders)

    run(tmp_path, scenario)
