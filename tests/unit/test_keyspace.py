"""KEYS and SCAN over the committed index: Redis's glob patterns, and the walk's pages."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from kayit.metadata.keyspace import MAX_PAGE, KeyOrder, KeyPage, position
from kayit.protocol.glob import glob_matcher


def matches(pattern: bytes, message_id: str) -> bool:
    return glob_matcher(pattern)(message_id)


def test_glob_patterns_as_redis_reads_them() -> None:
    assert matches(b"*", "anything") and matches(b"key:*", "key:12")
    assert not matches(b"key:*", "akey:12")
    assert matches(b"h?llo", "hello") and not matches(b"h?llo", "hllo")
    assert matches(b"h[ae]llo", "hallo") and not matches(b"h[ae]llo", "hillo")
    assert matches(b"h[^e]llo", "hallo") and not matches(b"h[^e]llo", "hello")
    assert matches(b"h[a-b]llo", "hbllo") and matches(b"h[b-a]llo", "hallo")
    assert matches(b"\\*x", "*x") and not matches(b"\\*x", "ax")
    assert matches(b"a.b", "a.b") and not matches(b"a.b", "axb")  # no regex leaks through
    assert matches(b"[", "[") and matches(b"a[b", "a[b")  # a set never closed is itself
    assert matches(b"\xc3\xa7*", "\u00e7ok")
    assert not matches(b"\xff*", "\u00ffx")  # not UTF-8: matches no id


@dataclass
class Index:
    """The part of the metadata a KeyOrder reads."""

    keys: set[str] = field(default_factory=set)
    applied_index: int = 0

    def ids(self) -> list[str]:
        return list(self.keys)

    def set(self, *keys: str) -> None:
        self.keys.update(keys)
        self.applied_index += 1


def walk(order: KeyOrder, index: Index, count: int, between: list[str] | None = None) -> list[str]:
    """A whole walk; ``between`` ids are set one after each page."""
    found: list[str] = []
    page = order.page(index, 0, count)  # type: ignore[arg-type]  # the part it reads
    while True:
        found += page.ids
        if between:
            index.set(between.pop())
        if page.cursor == 0:
            return found
        page = order.page(index, page.cursor, count)  # type: ignore[arg-type]


@given(
    st.sets(st.text(min_size=1, max_size=8), max_size=60),
    st.lists(st.text(min_size=1, max_size=8), max_size=20),
    st.integers(1, 7),
)
def test_a_walk_returns_every_id_present_all_along_once_at_least(
    present: set[str], added: list[str], count: int
) -> None:
    index = Index(set(present))
    found = walk(KeyOrder(), index, count, list(added))
    assert present <= set(found)
    assert set(found) <= present | set(added)
    assert len(found) == len(set(found)), "a walk of positions repeats nothing"


def test_a_new_walk_sees_ids_set_since_the_last() -> None:
    index = Index({"a", "b"})
    order = KeyOrder()
    assert sorted(walk(order, index, 10)) == ["a", "b"]
    index.set("c")
    assert sorted(walk(order, index, 10)) == ["a", "b", "c"]


def test_pages_follow_positions_and_match_filters_them() -> None:
    index = Index({f"k{n}" for n in range(30)} | {"other"})
    order = KeyOrder()
    first = order.page(index, 0, 10, glob_matcher(b"k*"))  # type: ignore[arg-type]
    assert first.cursor != 0 and len(first.ids) <= 10
    assert all(i.startswith("k") for i in first.ids)
    everything = order.page(index, 0, MAX_PAGE * 5)  # type: ignore[arg-type]
    assert everything.cursor == 0 and len(everything.ids) == 31
    positions = [position(i) for i in everything.ids]
    assert positions == sorted(positions) and min(positions) >= 1
    assert order.page(index, 2**63 + 1, 10) == KeyPage([], 0)  # type: ignore[arg-type]
