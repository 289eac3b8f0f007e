"""What the leader needs from the network to reach the other nodes; gRPC implements it
(kayit.rpc), tests may pass their own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kayit.version import Version


@dataclass(frozen=True, slots=True)
class Copy:
    message_id: str
    message: bytes
    version: Version
    # A repair's copy of a version the metadata committed already: stored as committed. A
    # SET's copy is not (False): the holder keeps it pending until its version commits.
    committed: bool = False


@dataclass(frozen=True, slots=True)
class Held:
    """A node's copies, each id with its version."""

    committed: list[tuple[str, Version]] = field(default_factory=list)
    pending: list[tuple[str, Version]] = field(default_factory=list)


class MemberUnreachable(Exception):
    """The node did not answer (down, refused, timed out, or failed the call)."""


class Deposed(Exception):
    """The node refused the call: it knows of a newer term than the caller's, so the caller
    leads no more."""


class MemberSlow(MemberUnreachable):
    """The node did not answer within the call's deadline. It may be paused, partitioned or
    overloaded, and may still carry the call out later: no sign by itself that it is dead."""


class CopySink(Protocol):
    """Where the Replicator sends copies."""

    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None: ...


class MemberTransport(CopySink, Protocol):
    async def store_many(self, address: str, copies: list[Copy], timeout: float) -> None:
        """Returns once the node holds each copy (pending or committed) or, for a committed
        one, a newer version. Raises Deposed when the node knows a newer term; MemberSlow
        after ``timeout`` seconds; MemberUnreachable otherwise, also when the node holds a
        newer committed version than a SET's copy."""

    async def retrieve(self, address: str, message_id: str, version: Version) -> bytes | None:
        """The node's copy of exactly ``version`` (pending or committed), or None. Raises
        MemberUnreachable."""

    async def inventory(self, address: str, verify: bool) -> Held:
        """Every copy the node holds. Raises MemberUnreachable."""

    async def delete(self, address: str, copies: list[tuple[str, Version]]) -> None:
        """Remove committed copies (a newer version there stays). Raises Deposed or
        MemberUnreachable."""
