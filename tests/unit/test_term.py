"""The leader's term file: a new node starts at 1, a damaged file stops the node."""

from __future__ import annotations

from pathlib import Path

import pytest

from kayit.cluster.term import next_term
from kayit.config import ConfigError


def test_a_new_node_starts_at_term_1_and_each_start_raises_it(tmp_path: Path) -> None:
    path = tmp_path / "node-5555" / "term"  # the data dir does not exist yet
    assert [next_term(path) for _ in range(3)] == [1, 2, 3]
    assert path.read_text() == "3\n"


@pytest.mark.parametrize("content", [b"", b"\n", b"  ", b"abc", b"-4", b"0", b"1.5", b"\xff\xfe"])
def test_a_damaged_term_file_is_an_error_naming_it_and_left_as_it_was(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "term"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"term file .* is damaged") as error:
        next_term(path)
    assert str(path) in str(error.value)
    assert "Restore it" in str(error.value)
    assert path.read_bytes() == content


def test_a_term_written_by_hand_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "term"
    path.write_text("41")
    assert next_term(path) == 42
