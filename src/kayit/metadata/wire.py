"""Binary building blocks of commands and snapshots: big-endian integers, length-prefixed UTF-8
strings, and index entries laid out in columns.

Columns are what make a batch of thousands of entries cheap: each field is one array, converted
in C, instead of one struct call per entry. Readers raise ValueError for any bytes no writer
produces (never struct.error, IndexError or a crash); writers raise ValueError for a value the
format cannot hold.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable
from itertools import accumulate, pairwise

from kayit.metadata.index import Columns
from kayit.metadata.packing import SEQ_BITS

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# Arrays travel little-endian whatever the host; these type codes have these sizes on every
# platform CPython supports, which the assertion makes sure of.
_ID_LENGTH, _U32_ARRAY, _U64_ARRAY = "H", "I", "Q"
assert (array(_ID_LENGTH).itemsize, array(_U32_ARRAY).itemsize, array(_U64_ARRAY).itemsize) == (
    2,
    4,
    8,
)
_SWAP = sys.byteorder != "little"


def _pack(layout: struct.Struct, value: int) -> bytes:
    try:
        return layout.pack(value)
    except struct.error as error:
        raise ValueError(f"{value} does not fit {layout.size} bytes") from error


def u8(value: int) -> bytes:
    return _pack(_U8, value)


def u16(value: int) -> bytes:
    return _pack(_U16, value)


def u32(value: int) -> bytes:
    return _pack(_U32, value)


def u64(value: int) -> bytes:
    return _pack(_U64, value)


def text(value: str) -> bytes:
    """UTF-8 behind a u16 length; a lone surrogate raises UnicodeEncodeError (a ValueError)."""
    encoded = value.encode("utf-8")
    return u16(len(encoded)) + encoded


def _array_bytes(typecode: str, values: Iterable[int]) -> bytes:
    try:
        column = array(typecode, values)
    except OverflowError as error:
        raise ValueError(f"a value does not fit array type {typecode!r}") from error
    if _SWAP:
        column.byteswap()
    return column.tobytes()


class Cursor:
    """Reads fields from the front of ``data``; every read checks that the bytes are there."""

    __slots__ = ("_data", "_position")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def take(self, size: int) -> bytes:
        end = self._position + size
        if end > len(self._data):
            raise ValueError("the bytes end in the middle of a field")
        field = self._data[self._position : end]
        self._position = end
        return field

    def u8(self) -> int:
        value: int = _U8.unpack(self.take(1))[0]
        return value

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def text(self) -> str:
        return self.take(self.u16()).decode("utf-8")

    def array(self, typecode: str, count: int) -> array[int]:
        column = array(typecode)
        column.frombytes(self.take(count * column.itemsize))
        if _SWAP:
            column.byteswap()
        return column

    def finish(self) -> None:
        if self._position != len(self._data):
            raise ValueError(f"{len(self._data) - self._position} bytes follow the last field")


def write_columns(columns: Columns) -> bytes:
    """Entries as: u32 count, u32 id bytes, id lengths (in characters), the ids' UTF-8, then
    terms (u32), seqs (u64), checksums (u32) and refs (u32), each an array."""
    ids = columns.ids
    count = len(ids)
    if any(len(field) != count for field in columns):
        raise ValueError("columns of different lengths")
    if count and (min(map(len, ids)) == 0 or max(columns.seqs) >> SEQ_BITS):
        raise ValueError(f"an empty id, or a seq of {SEQ_BITS} bits or more")
    joined = "".join(ids).encode("utf-8")
    return b"".join(
        (
            u32(count),
            u32(len(joined)),
            _array_bytes(_ID_LENGTH, map(len, ids)),
            joined,
            _array_bytes(_U32_ARRAY, columns.terms),
            _array_bytes(_U64_ARRAY, columns.seqs),
            _array_bytes(_U32_ARRAY, columns.checksums),
            _array_bytes(_U32_ARRAY, columns.refs),
        )
    )


def read_columns(cursor: Cursor) -> Columns:
    count = cursor.u32()
    joined_size = cursor.u32()
    lengths = cursor.array(_ID_LENGTH, count)
    joined = cursor.take(joined_size).decode("utf-8")
    ends = list(accumulate(lengths))
    if count and (min(lengths) == 0 or ends[-1] != len(joined)):
        raise ValueError("the id lengths do not add up to the ids")
    if not count and joined:
        raise ValueError("ids without entries")
    ids = [joined[start:end] for start, end in pairwise([0, *ends])]
    terms = cursor.array(_U32_ARRAY, count)
    seqs = cursor.array(_U64_ARRAY, count)
    if count and max(seqs) >> SEQ_BITS:
        raise ValueError(f"a seq of {SEQ_BITS} bits or more")
    checksums = cursor.array(_U32_ARRAY, count)
    refs = cursor.array(_U32_ARRAY, count)
    return Columns(ids, terms, seqs, checksums, refs)
