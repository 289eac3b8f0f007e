"""Forwarded client commands and their outcomes as Protobuf messages (no I/O here)."""

from __future__ import annotations

from collections.abc import Sequence

from kayit.protocol import ErrorCode, GetCommand, InvalidCommand, SetCommand
from kayit.protocol.commands import DeleteCommand, ExistsCommand, validate_id
from kayit.rpc import kayit_pb2 as pb
from kayit.server.outcome import (
    NOT_FOUND_OUTCOME,
    PRESENT,
    STORED,
    DataCommand,
    Failed,
    Found,
    NotFound,
    Outcome,
    Present,
    Stored,
)

_Kind = pb.ClientCommand.Kind
_Outcome = pb.ClientResult.Outcome
_CODES = {code.value: code for code in ErrorCode}


def batch_to_pb(commands: Sequence[DataCommand]) -> pb.ClientBatch:
    return pb.ClientBatch(commands=[_command_to_pb(command) for command in commands])


def _command_to_pb(command: DataCommand) -> pb.ClientCommand:
    if isinstance(command, SetCommand):
        return pb.ClientCommand(kind=_Kind.SET, id=command.id, message=command.message)
    if isinstance(command, ExistsCommand):
        return pb.ClientCommand(kind=_Kind.EXISTS, id=command.id)
    if isinstance(command, DeleteCommand):
        return pb.ClientCommand(kind=_Kind.DEL, id=command.id)
    return pb.ClientCommand(kind=_Kind.GET, id=command.id)


def commands_from_pb(batch: pb.ClientBatch) -> list[DataCommand | InvalidCommand]:
    """Forwarded commands get the same checks as a client's own."""
    return [_command_from_pb(command) for command in batch.commands]


def _command_from_pb(command: pb.ClientCommand) -> DataCommand | InvalidCommand:
    problem = validate_id(command.id)
    if problem:
        return InvalidCommand(problem)
    if command.kind == _Kind.GET:
        return GetCommand(command.id)
    if command.kind == _Kind.SET:
        if not command.message:
            return InvalidCommand("SET needs a message: SET <id> <message>")
        return SetCommand(command.id, command.message)
    if command.kind == _Kind.EXISTS:
        return ExistsCommand(command.id)
    if command.kind == _Kind.DEL:
        return DeleteCommand(command.id)
    return InvalidCommand(f"unknown forwarded command kind {command.kind}")


def outcome_to_pb(outcome: Outcome) -> pb.ClientResult:
    if isinstance(outcome, Stored):
        return pb.ClientResult(outcome=_Outcome.STORED)
    if isinstance(outcome, Found):
        return pb.ClientResult(outcome=_Outcome.FOUND, value=outcome.message)
    if isinstance(outcome, NotFound):
        return pb.ClientResult(outcome=_Outcome.NOT_FOUND)
    if isinstance(outcome, Present):
        return pb.ClientResult(outcome=_Outcome.PRESENT)
    return pb.ClientResult(
        outcome=_Outcome.ERROR, error_code=outcome.code.value, reason=outcome.reason
    )


def outcome_from_pb(result: pb.ClientResult) -> Outcome:
    """An answer this node cannot read (a code it does not know, from a newer leader) leaves
    the outcome unknown: INTERNAL, which no client takes for "nothing was done"."""
    if result.outcome == _Outcome.STORED:
        return STORED
    if result.outcome == _Outcome.FOUND:
        return Found(result.value)
    if result.outcome == _Outcome.NOT_FOUND:
        return NOT_FOUND_OUTCOME
    if result.outcome == _Outcome.PRESENT:
        return PRESENT
    if result.outcome == _Outcome.ERROR:
        return failure_from_pb(result.error_code, result.reason)
    return failure_from_pb(f"outcome {result.outcome}", result.reason)


def failure_from_pb(error_code: str, reason: str) -> Failed:
    """The leader's error; a code this node does not know (from a newer leader) leaves the
    outcome unknown: INTERNAL."""
    code = _CODES.get(error_code)
    if code is not None:
        return Failed(code, reason)
    shown = error_code or "no code"
    return Failed(ErrorCode.INTERNAL, f"unreadable answer from the leader ({shown}): {reason}")
