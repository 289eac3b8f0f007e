"""CopyTable keeps each copy's version and checksum exactly, packed into one int."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kayit.metadata.packing import SEQ_BITS
from kayit.storage.copy_table import CopyTable
from kayit.version import Version

versions = st.builds(Version, st.integers(0, 2**64), st.integers(0, 2**SEQ_BITS - 1))
checksums = st.integers(0, 2**32 - 1)


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.tuples(versions, checksums)))
def test_every_copy_reads_back_as_it_was_stored(copies: dict[str, tuple[Version, int]]) -> None:
    table = CopyTable(copies)
    assert len(table) == len(copies)
    assert dict(table.items()) == copies
    for key, copy in copies.items():
        assert table.get(key) == copy
        assert isinstance(table.get(key)[0], Version)  # type: ignore[index]


def test_update_replaces_and_discard_forgets() -> None:
    table = CopyTable({"a": (Version(1, 1), 7)})
    table.update({"a": (Version(2, 5), 8), "b": (Version(2, 6), 0)})
    assert table.get("a") == (Version(2, 5), 8)
    table.discard("a")
    table.discard("never")
    assert table.get("a") is None
    assert table.items() == [("b", (Version(2, 6), 0))]
