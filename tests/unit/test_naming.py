"""Message id -> file name: safe, injective, short enough, never leaves messages/."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.storage.naming import SUFFIX, file_name, is_message_file

HOSTILE_IDS = [
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    ".",
    "..",
    "...",
    ".hidden",
    "NUL",
    "CON",
    "a\x00b",
    "\x00",
    "a/b",
    "a\\b",
    "%2E",
    "%H" + "0" * 64,
    "~",
    "-",
    "\u011f\u00fc\u015f",  # Turkish letters
    "\U0001f600",
    "\u202e",  # right-to-left override
    "x" * 300,
    "\u00e9" * 200,
]


def assert_safe(name: str) -> None:
    assert name.endswith(SUFFIX)
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert not name.startswith(".")
    assert "." not in name[: -len(SUFFIX)]
    assert name.isascii()
    assert len(name.encode()) <= 255
    assert name not in (".", "..")


def test_integer_ids_keep_their_digits() -> None:
    assert file_name("42") == "42.msg"
    assert file_name("0") == "0.msg"
    assert file_name("1234567890") == "1234567890.msg"


def test_safe_characters_are_kept() -> None:
    assert file_name("Abc_xyz-09") == "Abc_xyz-09.msg"


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("../x", "%2E%2E%2Fx.msg"),
        ("/etc/passwd", "%2Fetc%2Fpasswd.msg"),
        (".", "%2E.msg"),
        ("..", "%2E%2E.msg"),
        ("a\x00b", "a%00b.msg"),
        ("%", "%25.msg"),
        ("\u011f", "%C4%9F.msg"),
        ("a b", "a%20b.msg"),
    ],
)
def test_escaping(key: str, name: str) -> None:
    assert file_name(key) == name


@pytest.mark.parametrize("key", HOSTILE_IDS)
def test_hostile_ids_give_safe_names(key: str) -> None:
    assert_safe(file_name(key))


@pytest.mark.parametrize("key", HOSTILE_IDS)
def test_path_stays_inside_the_directory(key: str, tmp_path: Path) -> None:
    directory = tmp_path / "messages"
    directory.mkdir()
    path = directory / file_name(key)
    assert path.resolve().parent == directory.resolve()
    assert path.name == file_name(key)
    path.write_bytes(b"x")  # the file system accepts the name
    assert [p.name for p in directory.iterdir()] == [file_name(key)]


def test_long_ids_are_hashed_and_stay_distinct() -> None:
    a = file_name("x" * 300)
    b = file_name("x" * 299 + "y")
    assert a != b
    assert a.startswith("%H")
    assert len(a) == len("%H") + 64 + len(SUFFIX)


def test_escaped_length_limit_boundary() -> None:
    assert file_name("a" * 240) == "a" * 240 + ".msg"
    assert file_name("a" * 241).startswith("%H")
    assert file_name("\u00e9" * 40) == "%C3%A9" * 40 + ".msg"  # exactly 240 characters
    assert file_name("\u00e9" * 41).startswith("%H")


def test_hash_name_cannot_be_forged_by_an_id() -> None:
    hashed = file_name("x" * 300)
    forged_id = hashed[: -len(SUFFIX)]
    assert file_name(forged_id) != hashed


def test_is_message_file() -> None:
    assert is_message_file("42.msg")
    assert is_message_file(file_name("x" * 300))
    assert not is_message_file(".42.msg")
    assert not is_message_file("42.msg.tmp")
    assert not is_message_file("42")
    assert not is_message_file("notes.txt")


_any_id = st.text(
    st.characters(codec="utf-8"), min_size=1, max_size=300
)  # ids are 1..200 bytes; longer ones test hashing


def test_empty_id_has_no_file_name() -> None:
    # ".msg" would look like a temp file, which DiskManager deletes at start.
    with pytest.raises(ValueError):
        file_name("")


@given(_any_id)
def test_every_name_is_safe(key: str) -> None:
    name = file_name(key)
    assert_safe(name)
    assert is_message_file(name)


@given(st.lists(_any_id, unique=True, max_size=50))
def test_distinct_ids_give_distinct_names(keys: list[str]) -> None:
    names = {file_name(key) for key in keys}
    assert len(names) == len(keys)


@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=20))
def test_short_ids_are_escaped_reversibly(key: str) -> None:
    # 20 characters are at most 80 bytes, at most 240 escaped characters: never hashed
    stem = file_name(key)[: -len(SUFFIX)]
    assert unquote_to_bytes(stem) == key.encode()


@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=80))  # ids are valid UTF-8
def test_resolved_path_stays_in_directory(key: str) -> None:
    directory = Path("/srv/kayit/messages")
    path = directory / file_name(key)
    assert path.parent == directory
    assert path.resolve().parent == directory.resolve()
