"""Requests out and replies in, for both protocols, with no I/O.

The hot path is per batch, not per request: a batch of requests is one ``b"".join`` of
pre-encoded pieces (a SET prefix or GET line per key, cached on first use, and a pool of encoded
values), and replies are counted per received chunk (``count(b"\\n")`` for text, a small RESP
scanner with a fast path for runs of ``+OK``). Whether each reply was the right kind is checked
once per batch against a string of expected kinds, one byte per request.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Literal

from kayit.bench.settings import COURSE_BIG_EVERY, COURSE_BIG_SIZE, BenchSettings, format_key

SET_KIND = ord("+")  # a SET expects OK / +OK
GET_KIND = ord("$")  # a GET expects a value or not-found (a bulk string or nil in RESP)
ONE_SET = bytes([SET_KIND])
ONE_GET = bytes([GET_KIND])

KEY_CACHE_LIMIT = 1_000_000  # larger keyspaces format each key as it is needed
VALUE_POOL_BYTES = 64 * 1024 * 1024  # larger size ranges encode each value as it is needed

OK_TEXT = b"OK\n"
OK_RESP = b"+OK\r\n"
NIL_RESP = b"$-1\r\n"


class RespError(Exception):
    """The bytes received are not RESP2."""


class _NoCache:
    """Stands in for a key cache when the keyspace is too large to keep one."""

    def __getitem__(self, index: int) -> bytes | None:
        return None

    def __setitem__(self, index: int, value: bytes) -> None:
        pass


class RequestPool:
    """Builds batches of random SET and GET requests; shared by every connection of a run."""

    def __init__(self, settings: BenchSettings) -> None:
        self.text = settings.protocol == "text"
        self._keyspace = settings.keyspace
        self._set_ratio = settings.set_ratio
        low, high = settings.size
        self._low = low
        self._span = high - low + 1
        self._filler = b"x" * high
        self._sets = self._key_cache(settings.keyspace)
        self._gets = self._key_cache(settings.keyspace)
        pooled = self._span * (low + high) // 2 <= VALUE_POOL_BYTES
        self._values = (
            [self.encode_value(size) for size in range(low, high + 1)] if pooled else None
        )
        # What a RESP GET of a value set by the bench returns, when all values have one size.
        self.value_reply = self.encode_value(low) if not self.text and low == high else b""

    @staticmethod
    def _key_cache(keyspace: int) -> list[bytes | None] | _NoCache:
        return [None] * keyspace if keyspace <= KEY_CACHE_LIMIT else _NoCache()

    def set_prefix(self, number: int) -> bytes:
        """The start of a SET of key ``number``; its value follows."""
        key = format_key(number)
        if self.text:
            return b"SET " + key + b" "
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n" % (len(key), key)

    def auth_request(self, password: str) -> bytes:
        secret = password.encode()
        if self.text:
            return b"AUTH " + secret + b"\n"
        return b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret)

    def get_request(self, number: int) -> bytes:
        key = format_key(number)
        if self.text:
            return b"GET " + key + b"\n"
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)

    def encode_value(self, size: int) -> bytes:
        """A value of ``size`` bytes as it ends a SET: with its newline, or as a bulk string."""
        if self.text:
            return self._filler[:size] + b"\n"
        return b"$%d\r\n%s\r\n" % (size, self._filler[:size])

    def batch(self, random: Callable[[], float], count: int) -> tuple[bytes, bytes]:
        """``count`` requests in one piece, and their expected reply kinds (one byte each)."""
        keyspace, set_ratio, low, span = self._keyspace, self._set_ratio, self._low, self._span
        sets, gets, values = self._sets, self._gets, self._values
        if count == 1:  # pipeline 1, the common case: no list, no join
            key = int(random() * keyspace)
            if random() < set_ratio:
                prefix = sets[key]
                if prefix is None:
                    prefix = sets[key] = self.set_prefix(key)
                pick = int(random() * span) if span > 1 else 0
                value = values[pick] if values is not None else self.encode_value(low + pick)
                return prefix + value, ONE_SET
            line = gets[key]
            if line is None:
                line = gets[key] = self.get_request(key)
            return line, ONE_GET
        parts: list[bytes] = []
        append = parts.append
        kinds = bytearray(count)
        for index in range(count):
            key = int(random() * keyspace)
            if random() < set_ratio:
                prefix = sets[key]
                if prefix is None:
                    prefix = sets[key] = self.set_prefix(key)
                append(prefix)
                pick = int(random() * span) if span > 1 else 0
                append(values[pick] if values is not None else self.encode_value(low + pick))
                kinds[index] = SET_KIND
            else:
                line = gets[key]
                if line is None:
                    line = gets[key] = self.get_request(key)
                append(line)
                kinds[index] = GET_KIND
        return b"".join(parts), bytes(kinds)


CourseCommand = Literal["set", "get", "big_set"]
COURSE_COMMANDS: tuple[CourseCommand, ...] = ("set", "get", "big_set")


class CourseRequests:
    """The course's stress client's commands, one text line each (without its newline).

    Command n (from 1) is a SET of ``COURSE_BIG_SIZE`` bytes when n is a multiple of
    ``COURSE_BIG_EVERY``; any other is a SET with probability ``set_ratio``, else a GET. Keys
    are bare integers uniform over the keyspace, values uniform over the size range.
    """

    def __init__(self, settings: BenchSettings, rng: random.Random) -> None:
        self._random = rng.random
        self._keyspace = settings.keyspace
        self._set_ratio = settings.set_ratio
        self._low, high = settings.size
        self._span = high - self._low + 1
        self._filler = b"x" * max(high, COURSE_BIG_SIZE)
        self._count = 0

    def next(self) -> tuple[CourseCommand, bytes]:
        self._count += 1
        key = b"%d" % int(self._random() * self._keyspace)
        if self._count % COURSE_BIG_EVERY == 0:
            return "big_set", b"SET " + key + b" " + self._filler[:COURSE_BIG_SIZE]
        if self._random() < self._set_ratio:
            size = self._low + int(self._random() * self._span)
            return "set", b"SET " + key + b" " + self._filler[:size]
        return "get", b"GET " + key


def error_reason(line: bytes) -> str:
    """What an error reply says, in its first two words (``ERROR NOREPLICAS``, ``ERR wrong``):
    enough to tell errors apart without counting every message that differs in an id."""
    words = line.lstrip(b"-").split(None, 2)[:2]
    return " ".join(word.decode("ascii", "replace") for word in words)[:60] or "an empty reply"


class TextReplies:
    """Replies of the text protocol: one line each. Error replies are counted in ``reasons``
    by ``error_reason``."""

    def __init__(self, reasons: Counter[str]) -> None:
        self._chunks: list[bytes] = []
        self._reasons = reasons

    def feed(self, data: bytes) -> int:
        """Keep ``data``; return how many replies it completes."""
        self._chunks.append(data)
        return data.count(b"\n")

    def batch_errors(self, expected: bytes) -> int:
        """Wrong or ERROR replies among those fed since the last call, one per expected kind."""
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        return count_text_errors(body, expected, self._reasons)


def count_text_errors(body: bytes, expected: bytes, reasons: Counter[str] | None = None) -> int:
    """Count replies in ``body`` (complete lines) that do not fit the expected kinds; the
    ``ERROR`` lines among them are counted in ``reasons`` too.

    A SET must get ``OK``; a GET gets its value or ``NOT_FOUND``, and fails only with a line
    that starts ``ERROR``. Missing replies count as errors too.
    """
    if SET_KIND not in expected:
        if b"ERROR" not in body and body.count(b"\n") == len(expected):
            return 0
    elif GET_KIND not in expected and body == OK_TEXT * len(expected):
        return 0
    lines = body.split(b"\n")
    lines.pop()  # what follows the last newline is not a reply
    errors = max(0, len(expected) - len(lines))
    for line, kind in zip(lines, expected, strict=False):
        if kind == SET_KIND:
            if line == b"OK" or line == b"OK\r":
                continue
        elif not line.startswith(b"ERROR"):
            continue
        errors += 1
        if reasons is not None and line.startswith(b"ERROR"):
            reasons[error_reason(line)] += 1
    return errors


class RespReplies:
    """Replies of RESP2: each complete top-level reply leaves its type byte in ``kinds``."""

    def __init__(self, reasons: Counter[str], value_reply: bytes = b"") -> None:
        self._buffer = bytearray()
        self._open: list[int] = []  # elements still to come in each open array, innermost last
        self.kinds = bytearray()
        self._value_reply = value_reply
        self._reasons = reasons  # error replies, by error_reason

    def feed(self, data: bytes) -> int:
        """Scan ``data``; return how many top-level replies it completes. Raises RespError.

        A chunk made of nothing but ``+OK`` replies, or of nothing but nil and
        ``value_reply`` (the bulk reply to a GET of a value the bench sets, when every value
        has one size), is counted in C without a loop per reply. Those patterns cannot
        overlap one another, so when their counts cover every byte the chunk is exactly a
        run of them.
        """
        if not self._buffer and not self._open:
            size = len(data)
            oks = data.count(OK_RESP)
            if oks * len(OK_RESP) == size:
                self.kinds += b"+" * oks
                return oks
            value_reply = self._value_reply
            if value_reply:
                values = data.count(value_reply)
                nils = data.count(NIL_RESP)
                if values * len(value_reply) + nils * len(NIL_RESP) == size:
                    self.kinds += b"$" * (values + nils)
                    return values + nils
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        position = 0
        done = 0
        open_arrays = self._open
        find = buffer.find
        record = self.kinds.append
        while position < end:
            line_end = find(b"\r\n", position)
            if line_end < 0:
                break
            kind = buffer[position]
            following = line_end + 2
            if kind == 0x24 or kind == 0x2A:  # $ bulk string, * array
                try:
                    length = int(buffer[position + 1 : line_end])
                except ValueError:
                    raise RespError(
                        f"bad length line {bytes(buffer[position:line_end])!r}"
                    ) from None
                if kind == 0x24 and length >= 0:
                    following += length + 2
                    if following > end:
                        break
                    if buffer[following - 2 : following] != b"\r\n":
                        raise RespError("a bulk string is not followed by CRLF")
                elif kind == 0x2A and length > 0:
                    open_arrays.append(length)
                    position = following
                    continue
            elif kind == 0x2D:  # - error
                self._reasons[error_reason(bytes(buffer[position:line_end]))] += 1
            elif kind != 0x2B and kind != 0x3A:  # + simple, : integer
                raise RespError(f"unknown reply type {bytes([kind])!r}")
            position = following
            if not open_arrays:
                record(kind)
                done += 1
                continue
            while open_arrays:  # an element ended; so may the arrays around it
                open_arrays[-1] -= 1
                if open_arrays[-1]:
                    break
                open_arrays.pop()
            else:
                record(0x2A)
                done += 1
        del buffer[:position]
        return done

    def batch_errors(self, expected: bytes) -> int:
        """Replies since the last call whose type is not the expected one (missing ones too)."""
        kinds = self.kinds
        if kinds == expected:
            errors = 0
        else:
            errors = abs(len(expected) - len(kinds))
            errors += sum(1 for got, want in zip(kinds, expected, strict=False) if got != want)
        kinds.clear()
        return errors
