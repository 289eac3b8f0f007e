"""What became of a client's SET, GET or EXISTS, and the reply that tells the client.

The leader carries out every client command through ``carry_out``, whether it reached the
leader's own client port or was forwarded by another node; the node the client is connected
to renders the outcome in the client's protocol. So a client is answered alike on any node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from kayit.cluster.leader import DEFERRED, ClusterError, Leader
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
from kayit.protocol.commands import DeleteCommand, ExistsCommand, KeyQuery

log = logging.getLogger(__name__)

DataCommand = SetCommand | GetCommand | ExistsCommand | DeleteCommand


@dataclass(frozen=True, slots=True)
class Stored:
    """A SET: the leader's copy and TOLERANCE member copies are stored."""


@dataclass(frozen=True, slots=True)
class Found:
    message: bytes


@dataclass(frozen=True, slots=True)
class NotFound:
    """A GET, EXISTS or DEL of an id never set (or deleted)."""


@dataclass(frozen=True, slots=True)
class Present:
    """An EXISTS of an id that is set, or a DEL of one that was."""


@dataclass(frozen=True, slots=True)
class Failed:
    code: ErrorCode
    reason: str


Outcome = Stored | Found | NotFound | Present | Failed

STORED = Stored()
NOT_FOUND_OUTCOME = NotFound()
PRESENT = Present()


def found_at_once(leader: Leader, message_id: str) -> Outcome | None:
    """The outcome of a GET of ``message_id`` when ``leader`` can answer it here and now,
    from memory (``Leader.get_at_once``); None when it must wait its turn."""
    message = leader.get_at_once(message_id)
    if message is DEFERRED:
        return None
    return NOT_FOUND_OUTCOME if message is None else Found(message)


async def carry_out(leader: Leader, command: DataCommand) -> Outcome:
    """Run one command on the leader; every failure becomes a Failed."""
    try:
        if isinstance(command, SetCommand):
            await leader.set(command.id, command.message)
            return STORED
        if isinstance(command, GetCommand):
            message = await leader.get(command.id)
            return NOT_FOUND_OUTCOME if message is None else Found(message)
        if isinstance(command, ExistsCommand):
            found = await leader.exists(command.id)
        else:
            found = await leader.delete(command.id)
    except ClusterError as error:
        return Failed(error.code, str(error))
    except Exception:
        log.exception("command on %r failed", command.id)
        return Failed(ErrorCode.INTERNAL, "internal error; see the node's log")
    return PRESENT if found else NOT_FOUND_OUTCOME


@dataclass(frozen=True, slots=True)
class ReplyStyle:
    """How one protocol writes each kind of outcome."""

    ok: bytes
    not_found: bytes
    value: Callable[[bytes], bytes]
    error: Callable[[ErrorCode, str], bytes]
    number: Callable[[int], bytes]

    def render(self, outcome: Outcome) -> bytes:
        if isinstance(outcome, Stored):
            return self.ok
        if isinstance(outcome, Found):
            return self.value(outcome.message)
        if isinstance(outcome, NotFound):
            return self.not_found
        if isinstance(outcome, Failed):
            return self.error(outcome.code, outcome.reason)
        raise TypeError(f"{outcome!r} is answered by the query that asked, not alone")


TEXT = ReplyStyle(OK, NOT_FOUND, encode_value, encode_error, lambda number: b"%d\n" % number)
RESP = ReplyStyle(resp.OK, resp.NULL2, resp.bulk, resp.coded_error, resp.integer)
RESP3 = ReplyStyle(resp.OK, resp.NULL3, resp.bulk, resp.coded_error, resp.integer)


def render_query(query: KeyQuery, outcomes: list[Outcome], style: ReplyStyle) -> bytes:
    """The reply to MGET, EXISTS, STRLEN, TYPE or DEL from the outcome of each id's GET
    (MGET, STRLEN), EXISTS (EXISTS, TYPE) or DEL. The first failure answers for the whole
    command."""
    for outcome in outcomes:
        if isinstance(outcome, Failed):
            return style.error(outcome.code, outcome.reason)
    if query.name in ("EXISTS", "DEL"):  # an id named twice counts twice, as in Redis
        return style.number(sum(isinstance(outcome, Present) for outcome in outcomes))
    if query.name == "STRLEN":
        return style.number(sum(len(o.message) for o in outcomes if isinstance(o, Found)))
    if query.name == "TYPE":
        return resp.simple("string" if isinstance(outcomes[0], Present) else "none")
    return resp.array([style.render(outcome) for outcome in outcomes])  # MGET
