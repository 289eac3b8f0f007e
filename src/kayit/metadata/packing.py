"""A copy's identity, its version and checksum, packed as one int: ``term | seq | checksum``
in bit fields. Ints of one id order as their versions do (the checksum only breaks ties).

The committed index and each node's table of its copies keep one per message, millions of
them: one int costs ~140 bytes less than a tuple of a Version and a checksum.
"""

from __future__ import annotations

from kayit.version import Version

SEQ_BITS = 40  # a Version's seq must be below 2**SEQ_BITS (the leader counts from 1 in a term)
CHECKSUM_BITS = 32  # a crc32
SEQ_MASK = (1 << SEQ_BITS) - 1
CHECKSUM_MASK = (1 << CHECKSUM_BITS) - 1


def pack(term: int, seq: int, checksum: int) -> int:
    return (term << SEQ_BITS | seq) << CHECKSUM_BITS | checksum


def unpack(packed: int) -> tuple[Version, int]:
    """The version and checksum ``pack`` took."""
    version = packed >> CHECKSUM_BITS
    return Version(version >> SEQ_BITS, version & SEQ_MASK), packed & CHECKSUM_MASK
