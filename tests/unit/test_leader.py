"""Leader logic over a fake member network: replacement, undo of failed SETs, versions,
slow members, and reads that trust only the index."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kayit.cluster.leader import ClusterError, Leader
from kayit.cluster.membership import Membership
from kayit.cluster.repair import Repairer
from kayit.cluster.transport import Copy, MemberSlow, MemberUnreachable
from kayit.protocol.errors import ErrorCode
from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.store import MessageStore
from kayit.version import Version

T = TypeVar("T")
MEMBERS = ["m1", "m2", "m3", "m4"]


class FakeMembers:
    """Members as dicts. A member in ``down`` fails every call, like a killed process; a
    paused one (SIGSTOP) answers once resumed, and a call that has a deadline fails as slow
    when it passes, as over gRPC; calls without one have ``rpc_timeout``."""

    rpc_timeout = 0.3

    def __init__(self) -> None:
        self.copies: dict[str, dict[str, Copy]] = {m: {} for m in MEMBERS}
        self.down: set[str] = set()
        self.calls: Counter[str] = Counter()
        self._paused: dict[str, asyncio.Event] = {}

    def pause(self, address: str) -> None:
        self._paused[address] = asyncio.Event()

    def resume(self, address: str) -> None:
        self._paused.pop(address).set()

    async def _answer(self, address: str, timeout: float | None = None) -> None:
        await asyncio.sleep(0)
        if address in self.down:
            raise MemberUnreachable(f"{address} is down")
        paused = self._paused.get(address)
        if paused is not None:
            try:
                await asyncio.wait_for(paused.wait(), timeout or self.rpc_timeout)
            except TimeoutError:
                raise MemberSlow(f"{address} is paused") from None

    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None:
        self.calls[address] += 1
        await self._answer(address, timeout)
        held = self.copies[address]
        for copy in copies:
            current = held.get(copy.message_id)
            if current is None or current.version <= copy.version:
                held[copy.message_id] = copy

    async def retrieve(self, address: str, message_id: str) -> Copy | None:
        await self._answer(address)
        return self.copies[address].get(message_id)

    async def inventory(self, address: str, verify: bool) -> list[tuple[str, Version]]:
        await self._answer(address)
        return [(key, copy.version) for key, copy in self.copies[address].items()]

    async def delete(self, address: str, copies: list[tuple[str, Version]]) -> None:
        await self._answer(address)
        for key, version in copies:
            held = self.copies[address].get(key)
            if held is not None and held.version <= version:
                del self.copies[address][key]

    def holders(self, message_id: str) -> list[str]:
        return [m for m in MEMBERS if message_id in self.copies[m]]


def run(
    tmp_path: Path,
    scenario: Callable[[Leader, FakeMembers], Awaitable[T]],
    store_timeout: float = 5.0,
    term: int = 1,
) -> T:
    async def main() -> T:
        members = FakeMembers()
        membership = Membership(dead_after=3600)
        for address in MEMBERS:
            membership.heard_from(address, 0)
        store = MessageStore(
            DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER), keep_versions=False
        )
        await store.open()
        leader = Leader(
            store=store,
            membership=membership,
            transport=members,
            tolerance=2,
            term=term,
            store_timeout=store_timeout,
        )
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
        with pytest.raises(ClusterError, match="only 1 live members") as refused:
            await leader.set("a", b"one")
        assert refused.value.code is ErrorCode.NOREPLICAS
        assert sum(members.calls.values()) == 0
        assert not (tmp_path / "messages" / "a.msg").exists()

    run(tmp_path, scenario)


def test_a_new_id_whose_set_failed_part_way_stays_unseen(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        members.down.update(["m2", "m3", "m4"])
        with pytest.raises(ClusterError) as failed:
            await leader.set("a", b"one")
        assert failed.value.code is ErrorCode.NOREPLICAS
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
        assert before is not None
        # Back at exactly the index's version: reads count no other.
        assert members.copies["m1"]["a"] == Copy("a", b"old", before.version)
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
        with pytest.raises(ClusterError, match="no holder") as unavailable:
            await leader.get("a")
        assert unavailable.value.code is ErrorCode.UNAVAILABLE

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
        # Left by a SET an earlier leader (term 1) answered with an error.
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

    run(tmp_path, scenario, term=2)


def test_a_leader_disk_failure_is_an_ioerror_and_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("a", b"old")
        before = leader.index.get("a")
        assert before is not None

        async def broken_put(*_args: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(leader.store, "put", broken_put)
        with pytest.raises(ClusterError) as failed:
            await leader.set("a", b"new")
        assert failed.value.code is ErrorCode.IOERROR
        assert leader.index.get("a") == before
        for holder in members.holders("a"):
            assert members.copies[holder]["a"] == Copy("a", b"old", before.version)

    run(tmp_path, scenario)


def test_a_holders_copy_newer_than_the_index_is_never_served(tmp_path: Path) -> None:
    """A leftover of a SET never acknowledged (its undo did not reach the member): passed
    over, deleted so that repair can place the current version there again, and repaired."""

    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("a", b"acknowledged")
        entry = leader.index.get("a")
        assert entry is not None and entry.holders == ("m1", "m2")
        members.copies["m1"]["a"] = Copy("a", b"answered ERROR", Version(1, 999))
        (tmp_path / "messages" / "a.msg").unlink()

        assert await leader.get("a") == b"acknowledged"
        assert "a" not in members.copies["m1"]
        lost = leader.index.get("a")
        assert lost is not None and lost.holders == ("m2",)
        assert leader.under_replicated == {"a"}
        assert leader.membership.is_alive("m1")

        assert await leader.repair("a")
        repaired = leader.index.get("a")
        assert repaired is not None and len(repaired.holders) == 2
        for holder in repaired.holders:
            assert members.copies[holder]["a"] == Copy("a", b"acknowledged", entry.version)

        (tmp_path / "messages" / "a.msg").unlink()
        for holder in repaired.holders:
            members.copies[holder]["a"] = Copy("a", b"answered ERROR", Version(1, 1000))
        with pytest.raises(ClusterError) as unavailable:
            await leader.get("a")
        assert unavailable.value.code is ErrorCode.UNAVAILABLE

    run(tmp_path, scenario)


def test_a_newer_copy_of_a_set_under_way_is_passed_over_but_not_lost(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("a", b"old")
        before = leader.index.get("a")
        (tmp_path / "messages" / "a.msg").unlink()
        members.pause("m1")
        reading = asyncio.create_task(leader.get("a"))  # waits on m1 until its call times out
        await asyncio.sleep(0.05)
        writing = asyncio.create_task(leader.set("a", b"new"))  # waits on m1; m2 has it
        while members.copies["m2"]["a"].message != b"new":
            await asyncio.sleep(0.01)

        with pytest.raises(ClusterError) as unavailable:
            await reading
        assert unavailable.value.code is ErrorCode.UNAVAILABLE
        assert leader.index.get("a") == before  # m2 not reported lost: the SET settles it
        assert leader.under_replicated == set()
        assert members.copies["m2"]["a"].message == b"new"
        assert leader.membership.is_alive("m1")  # slow, not dead

        members.resume("m1")
        await writing
        assert await leader.get("a") == b"new"

    run(tmp_path, scenario)


def test_a_paused_member_is_passed_over_by_sets_but_not_declared_dead(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        members.pause("m1")
        started = time.monotonic()
        await leader.set("a", b"one")
        assert time.monotonic() - started < 2  # its deadline, not the 5 s RPC timeout
        assert members.holders("a") == ["m2", "m3"]
        assert leader.membership.is_alive("m1")
        assert leader.index.load["m1"] == 0

        # Resumed, it stores the copy that reached it before the pause, late: surplus, which
        # reconciliation deletes.
        members.resume("m1")
        members.copies["m1"]["a"] = members.copies["m2"]["a"]
        expected = leader.expected_on("m1")
        held = await members.inventory("m1", verify=True)
        assert await leader.reconcile("m1", expected, held) == 1
        assert members.holders("a") == ["m2", "m3"]

    run(tmp_path, scenario, store_timeout=0.05)


def test_reconcile_during_a_set_deletes_old_copies_and_keeps_ones_the_set_may_own(
    tmp_path: Path,
) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        await leader.set("a", b"old")  # on m1, m2
        entry = leader.index.get("a")
        assert entry is not None
        members.pause("m2")
        writing = asyncio.create_task(leader.set("a", b"new"))  # under way while m2 is paused
        await asyncio.sleep(0.05)
        members.copies["m3"]["a"] = Copy("a", b"old", entry.version)  # surplus: not a holder
        members.copies["m4"]["a"] = Copy("a", b"new", Version(1, 999))  # perhaps the SET's

        for address in ["m3", "m4"]:
            expected = leader.expected_on(address)
            held = await members.inventory(address, verify=True)
            await leader.reconcile(address, expected, held)
        assert "a" not in members.copies["m3"]
        assert "a" in members.copies["m4"]
        members.resume("m2")
        await writing

    run(tmp_path, scenario)


def test_a_failed_repair_is_tried_again_on_the_next_pass(tmp_path: Path) -> None:
    async def scenario(leader: Leader, members: FakeMembers) -> None:
        repairer = Repairer(leader, members, repair_after=3600, rate=1000, scrub_every=3600)
        await leader.set("a", b"x")
        entry = leader.index.get("a")
        assert entry is not None
        lost, kept = entry.holders
        del members.copies[lost]["a"]
        leader.index.commit("a", entry.version, [kept], entry.checksum)
        members.down = {m for m in MEMBERS if m != kept}  # nowhere to copy it to

        await repairer.repair_pass(["a"])
        assert leader.under_replicated == {"a"}  # not forgotten

        members.down = set()
        await repairer.repair_pass(sorted(leader.under_replicated))
        repaired = leader.index.get("a")
        assert repaired is not None and len(repaired.holders) == 2

    run(tmp_path, scenario)


def test_a_leader_that_lost_its_data_keeps_the_copies_it_does_not_know(tmp_path: Path) -> None:
    """Its directory deleted, the leader starts afresh at term 1; the members' copies carry
    versions it never issued, so it knows it forgot and deletes none of them, also later."""

    async def scenario(leader: Leader, members: FakeMembers) -> None:
        for n in range(5):
            members.copies["m1"][f"old-{n}"] = Copy(f"old-{n}", b"acked", Version(1, 500 + n))
        await leader.set("new", b"n")
        assert leader.index_complete

        inventory = await members.inventory("m1", verify=True)
        assert await leader.reconcile("m1", leader.expected_on("m1"), inventory) == 0
        assert not leader.index_complete
        assert leader.store.memory_lost  # remembered across restarts
        assert all(f"old-{n}" in members.copies["m1"] for n in range(5))

    run(tmp_path, scenario)
