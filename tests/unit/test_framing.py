"""RequestFramer on text lines: byte chunks in, complete lines (or OverlongLine markers) out."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from kayit.protocol.framing import OverlongLine, Request, RequestFramer

Item = Request


def feed_all(framer: RequestFramer, chunks: Iterable[bytes]) -> list[Item]:
    """Feed every chunk, checking the memory bound after each one."""
    out: list[Item] = []
    for chunk in chunks:
        out += framer.feed(chunk)
        assert framer.pending_bytes <= framer.max_line + 1
    return out


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` split at the given positions (any order, duplicates give empty chunks)."""
    points = [0, *sorted(min(max(cut, 0), len(data)) for cut in cuts), len(data)]
    return [data[a:b] for a, b in pairwise(points)]


def expected_lines(lines: list[tuple[bytes, bytes]], max_line: int) -> list[Item]:
    """Reference model: a line is its bytes before LF, less one trailing CR."""
    out: list[Item] = []
    for body, terminator in lines:
        raw = body + terminator[:-1]  # CRLF leaves its CR here; LF leaves nothing
        line = raw[:-1] if raw.endswith(b"\r") else raw
        out.append(OverlongLine(max_line) if len(line) > max_line else line)
    return out


def test_lf_lines_in_one_chunk() -> None:
    framer = RequestFramer(max_line=100)
    assert framer.feed(b"SET 1 a\nGET 1\n") == [b"SET 1 a", b"GET 1"]
    assert framer.pending_bytes == 0


def test_crlf_lines_lose_the_whole_terminator() -> None:
    framer = RequestFramer(max_line=100)
    assert framer.feed(b"SET 1 a\r\nGET 1\r\n") == [b"SET 1 a", b"GET 1"]


def test_mixed_terminators_and_empty_lines() -> None:
    framer = RequestFramer(max_line=100)
    assert framer.feed(b"a\n\r\n\nb\r\n") == [b"a", b"", b"", b"b"]


def test_only_one_trailing_cr_is_removed_and_inner_cr_is_kept() -> None:
    framer = RequestFramer(max_line=100)
    assert framer.feed(b"a\rb\r\r\n") == [b"a\rb\r"]


def test_partial_line_waits_for_its_newline() -> None:
    framer = RequestFramer(max_line=100)
    assert framer.feed(b"SET 1 he") == []
    assert framer.pending_bytes == len(b"SET 1 he")
    assert framer.feed(b"llo") == []
    assert framer.feed(b"\nGET") == [b"SET 1 hello"]
    assert framer.pending_bytes == 3
    assert framer.feed(b" 1\n") == [b"GET 1"]
    assert framer.pending_bytes == 0


def test_cr_and_lf_in_different_chunks() -> None:
    framer = RequestFramer(max_line=100)
    assert framer.feed(b"GET 1\r") == []
    assert framer.feed(b"\n") == [b"GET 1"]


def test_empty_chunk_changes_nothing() -> None:
    framer = RequestFramer(max_line=100)
    assert framer.feed(b"ab") == []
    assert framer.feed(b"") == []
    assert framer.pending_bytes == 2
    assert framer.feed(b"\n") == [b"ab"]


def test_every_single_split_position_gives_the_same_lines() -> None:
    stream = b"SET 1 hello world\r\nGET 1\n\nSET 22 x \r\nGET 22\r\n"
    whole = RequestFramer(max_line=64).feed(stream)
    assert whole == [b"SET 1 hello world", b"GET 1", b"", b"SET 22 x ", b"GET 22"]
    for cut in range(len(stream) + 1):
        framer = RequestFramer(max_line=64)
        assert feed_all(framer, [stream[:cut], stream[cut:]]) == whole, cut
        assert framer.pending_bytes == 0


def test_one_byte_at_a_time() -> None:
    stream = b"SET 1 a\r\nGET 1\n"
    framer = RequestFramer(max_line=64)
    assert feed_all(framer, [stream[i : i + 1] for i in range(len(stream))]) == [
        b"SET 1 a",
        b"GET 1",
    ]


def test_line_of_exactly_max_line_passes_with_either_terminator() -> None:
    for terminator in (b"\n", b"\r\n"):
        for cut in range(6 + len(terminator) + 1):
            stream = b"x" * 6 + terminator + b"ok\n"
            framer = RequestFramer(max_line=6)
            assert feed_all(framer, chunked(stream, [cut])) == [b"x" * 6, b"ok"]


def test_overlong_line_in_one_chunk_becomes_one_marker_and_next_line_survives() -> None:
    framer = RequestFramer(max_line=4)
    assert framer.feed(b"12345\nok\n") == [OverlongLine(4), b"ok"]
    assert framer.pending_bytes == 0


def test_overlong_by_one_byte_before_crlf_and_lf() -> None:
    assert RequestFramer(max_line=4).feed(b"12345\r\nok\r\n") == [OverlongLine(4), b"ok"]
    assert RequestFramer(max_line=4).feed(b"12345\nok\n") == [OverlongLine(4), b"ok"]


def test_overlong_line_whose_newline_arrives_in_a_later_chunk() -> None:
    framer = RequestFramer(max_line=4)
    out = feed_all(framer, [b"123", b"4567", b"89", b"0123456789" * 5, b"xyz\nok\n", b"abcd\n"])
    assert out == [OverlongLine(4), b"ok", b"abcd"]
    assert framer.pending_bytes == 0


def test_overlong_line_bytes_are_discarded_not_buffered() -> None:
    framer = RequestFramer(max_line=8)
    assert framer.feed(b"a" * 9) == []  # could still be 8 bytes plus CR
    assert framer.pending_bytes == 9
    assert framer.feed(b"a") == [OverlongLine(8)]
    assert framer.pending_bytes == 0
    for _ in range(100):
        assert framer.feed(b"b" * 1000) == []
        assert framer.pending_bytes == 0
    assert framer.feed(b"\r\nnext\r\n") == [b"next"]


def test_line_split_right_after_a_full_buffer_with_cr() -> None:
    framer = RequestFramer(max_line=4)
    assert framer.feed(b"1234\r") == []
    assert framer.pending_bytes == 5
    assert framer.feed(b"\n") == [b"1234"]


def test_two_overlong_lines_in_a_row_give_two_markers() -> None:
    framer = RequestFramer(max_line=3)
    out = feed_all(framer, [b"aaaaaa", b"a\nbbbbbbb", b"\nok\n"])
    assert out == [OverlongLine(3), OverlongLine(3), b"ok"]


def test_max_line_zero_allows_only_empty_lines() -> None:
    framer = RequestFramer(max_line=0)
    assert framer.feed(b"\n\r\na\n\n") == [b"", b"", OverlongLine(0), b""]


def test_default_limit_is_large() -> None:
    framer = RequestFramer()
    line = b"m" * 100_000
    assert framer.feed(line + b"\n") == [line]


def _text_line(max_size: int) -> st.SearchStrategy[bytes]:
    # A line starting with '*' is RESP (tests/unit/test_resp.py), as in Redis.
    return st.binary(max_size=max_size).filter(lambda b: b"\n" not in b and not b.startswith(b"*"))


_line_body = _text_line(12)
_terminator = st.sampled_from([b"\n", b"\r\n"])


@given(
    lines=st.lists(st.tuples(_text_line(40), _terminator)),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_any_rechunking_gives_the_same_lines(
    lines: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(body + terminator for body, terminator in lines)
    framer = RequestFramer(max_line=64)
    assert feed_all(framer, chunked(stream, cuts)) == expected_lines(lines, 64)
    assert framer.pending_bytes == 0


@given(
    lines=st.lists(st.tuples(_line_body, _terminator), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20),
    max_line=st.integers(min_value=0, max_value=8),
)
def test_any_rechunking_with_a_small_limit_matches_the_model(
    lines: list[tuple[bytes, bytes]], cuts: list[int], max_line: int
) -> None:
    stream = b"".join(body + terminator for body, terminator in lines)
    framer = RequestFramer(max_line=max_line)
    assert feed_all(framer, chunked(stream, cuts)) == expected_lines(lines, max_line)
    assert framer.pending_bytes == 0


@given(
    chunks=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"*", b"+")), max_size=30),
    max_line=st.integers(min_value=0, max_value=10),
)
def test_buffer_never_exceeds_limit_plus_one(chunks: list[bytes], max_line: int) -> None:
    framer = RequestFramer(max_line=max_line)
    for item in feed_all(framer, chunks):
        if isinstance(item, bytes):
            assert len(item) <= max_line
            assert b"\n" not in item
        else:
            assert item == OverlongLine(max_line)


def test_an_abandoned_framer_drops_its_unfinished_request_and_frames_nothing_more() -> None:
    framer = RequestFramer(1024)
    assert framer.feed(b"SET a b\nSET c unfinished") == [b"SET a b"]
    assert framer.pending_bytes == len(b"SET c unfinished")
    assert not framer.pending_resp
    framer.abandon()
    assert framer.pending_bytes == 0
    assert framer.feed(b" line\nGET a\n") == []
    assert framer.pending_bytes == 0


def test_an_unfinished_resp_array_is_told_apart() -> None:
    framer = RequestFramer(1024)
    assert framer.feed(b"*2\r\n$3\r\nGET\r\n$1\r\n") == []
    assert framer.pending_resp
