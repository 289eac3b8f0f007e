"""A bounded cache of recently written messages, so hot GETs skip the disk threads. The files
stay the truth: the cache only holds values a write just put there, and drops the oldest."""

from __future__ import annotations

from collections import OrderedDict

# What an entry costs beyond its value's bytes (the key, the bytes object, the dict's node),
# so that the limit bounds real memory even when values are small.
ENTRY_OVERHEAD = 200


class ValueCache:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._values: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Memory the cache accounts for: its values plus ENTRY_OVERHEAD each."""
        return self._bytes

    def get(self, message_id: str) -> bytes | None:
        value = self._values.get(message_id)
        if value is not None:
            self._values.move_to_end(message_id)
        return value

    def put(self, message_id: str, value: bytes) -> None:
        self.drop(message_id)
        if len(value) + ENTRY_OVERHEAD > self.limit_bytes // 8:
            return  # one huge value would push out thousands of small ones
        self._values[message_id] = value
        self._bytes += len(value) + ENTRY_OVERHEAD
        while self._bytes > self.limit_bytes:
            _, oldest = self._values.popitem(last=False)
            self._bytes -= len(oldest) + ENTRY_OVERHEAD

    def drop(self, message_id: str) -> None:
        old = self._values.pop(message_id, None)
        if old is not None:
            self._bytes -= len(old) + ENTRY_OVERHEAD
