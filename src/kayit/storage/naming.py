"""Map message ids to file names inside messages/ and back.

Bytes in [A-Za-z0-9_-] stay as they are, so integer ids give ``42.msg``; every other byte of
the UTF-8 id becomes ``%XX``. A name therefore never holds '/', '.', or NUL and cannot leave
the directory. Names the file system would refuse as too long are replaced by a hash.
"""

from __future__ import annotations

import hashlib

SUFFIX = ".msg"
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_NAME = 240  # below the common 255-byte file name limit, with room for the suffix
_HASHED_PREFIX = "%H"  # never produced by escaping: H is not a hex digit


def file_name(message_id: str) -> str:
    if not message_id:
        raise ValueError("a message id cannot be empty")
    escaped = "".join(
        chr(byte) if byte in _SAFE else f"%{byte:02X}" for byte in message_id.encode("utf-8")
    )
    if len(escaped) > _MAX_NAME:
        digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
        escaped = _HASHED_PREFIX + digest
    return escaped + SUFFIX


def is_message_file(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith(".")
