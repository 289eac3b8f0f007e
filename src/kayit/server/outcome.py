"""What became of a client's SET or GET, and the reply that tells the client.

The leader carries out every client command through ``carry_out``, whether it reached the
leader's own client port or was forwarded by another node; the node the client is connected
to renders the outcome in the client's protocol. So a client is answered alike on any node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from kayit.cluster.leader import ClusterError, Leader
from kayit.protocol import (
    NOT_FOUND,
    OK,
    ErrorCode,
    GetCommand,
    SetCommand,
    encode_error,
    encode_value,
    resp,
)

log = logging.getLogger(__name__)

DataCommand = SetCommand | GetCommand


@dataclass(frozen=True, slots=True)
class Stored:
    """A SET: the leader's copy and TOLERANCE member copies are stored."""


@dataclass(frozen=True, slots=True)
class Found:
    message: bytes


@dataclass(frozen=True, slots=True)
class NotFound:
    """A GET of an id never set."""


@dataclass(frozen=True, slots=True)
class Failed:
    code: ErrorCode
    reason: str


Outcome = Stored | Found | NotFound | Failed

STORED = Stored()
NOT_FOUND_OUTCOME = NotFound()


async def carry_out(leader: Leader, command: DataCommand) -> Outcome:
    """Run one command on the leader; every failure becomes a Failed."""
    try:
        if isinstance(command, SetCommand):
            await leader.set(command.id, command.message)
            return STORED
        message = await leader.get(command.id)
    except ClusterError as error:
        return Failed(error.code, str(error))
    except Exception:
        log.exception("command on %r failed", command.id)
        return Failed(ErrorCode.INTERNAL, "internal error; see the node's log")
    return NOT_FOUND_OUTCOME if message is None else Found(message)


@dataclass(frozen=True, slots=True)
class ReplyStyle:
    """How one protocol writes each kind of outcome."""

    ok: bytes
    not_found: bytes
    value: Callable[[bytes], bytes]
    error: Callable[[ErrorCode, str], bytes]

    def render(self, outcome: Outcome) -> bytes:
        if isinstance(outcome, Stored):
            return self.ok
        if isinstance(outcome, Found):
            return self.value(outcome.message)
        if isinstance(outcome, NotFound):
            return self.not_found
        return self.error(outcome.code, outcome.reason)


TEXT = ReplyStyle(OK, NOT_FOUND, encode_value, encode_error)
RESP = ReplyStyle(resp.OK, resp.bulk(None), resp.bulk, resp.coded_error)
