"""What the leader needs from the network to reach members; gRPC implements it (kayit.rpc),
tests may pass their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kayit.version import Version


@dataclass(frozen=True, slots=True)
class Copy:
    message_id: str
    message: bytes
    version: Version


class MemberUnreachable(Exception):
    """The member did not answer (down, refused, timed out, or failed the call)."""


class MemberSlow(MemberUnreachable):
    """The member did not answer within the call's deadline. It may be paused, partitioned or
    overloaded, and may still carry the call out later: no sign by itself that it is dead."""


class MemberTransport(Protocol):
    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None:
        """Returns once the member holds each copy or a newer version of it. Raises
        MemberUnreachable, or MemberSlow after ``timeout`` seconds."""

    async def retrieve(self, address: str, message_id: str) -> Copy | None:
        """A member's copy of ``message_id``, or None if it has none. Raises MemberUnreachable."""

    async def inventory(self, address: str, verify: bool) -> list[tuple[str, Version]]:
        """Every copy a member holds, with its version. Raises MemberUnreachable."""

    async def delete(self, address: str, copies: list[tuple[str, Version]]) -> None:
        """Remove copies from a member (a newer version there stays). Raises
        MemberUnreachable."""
