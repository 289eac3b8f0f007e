"""Map message ids to file names: ``messages/<id>.msg``, and ``pending/<id>.<term>.<seq>.msg``
where the releases before the copy log kept pending copies.

Bytes in [A-Za-z0-9_-] stay as they are, so integer ids give ``42.msg``; every other byte of
the UTF-8 id becomes ``%XX``. The escaped id therefore never holds '/', '.', or NUL and cannot
leave the directory, and in a pending name the dots before the suffix can only be the ones
around the version. Ids the file system would refuse as too long are replaced by a hash.
"""

from __future__ import annotations

import hashlib

from kayit.version import Version

SUFFIX = ".msg"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_NAME = 240  # below the common 255-byte file name limit, with room for the suffix
_HASHED_PREFIX = "%H"  # never produced by escaping: H is not a hex digit
# ".<term>.<seq>" at its longest: a pending name hashes its id sooner to leave room for it.
_VERSION_ROOM = 2 * len(str(2**64 - 1)) + 2


def file_name(message_id: str) -> str:
    return _stem(message_id, _MAX_NAME) + SUFFIX


def pending_file_name(message_id: str, version: Version) -> str:
    """The name of a pending copy's file (before the copy log): one per version of an id."""
    return f"{_stem(message_id, _MAX_NAME - _VERSION_ROOM)}.{version.term}.{version.seq}{SUFFIX}"


def is_message_file(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith(".")


def _stem(message_id: str, limit: int) -> str:
    if not message_id:
        raise ValueError("a message id cannot be empty")
    escaped = "".join(
        chr(byte) if byte in _SAFE else f"%{byte:02X}" for byte in message_id.encode("utf-8")
    )
    if len(escaped) > limit:
        digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
        escaped = _HASHED_PREFIX + digest
    return escaped
