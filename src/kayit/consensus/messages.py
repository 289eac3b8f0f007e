"""What Raft nodes persist and say to each other: log entries, hard state and messages.

Every message carries the sender's term (Raft §5.1): a receiver fences by it before anything else.
All types are immutable values, so a driver may serialise, duplicate or drop them freely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kayit.consensus.membership import ClusterConfig


class EntryKind(enum.Enum):
    COMMAND = "command"
    # Appended by every new leader so that it commits an entry of its own term (Raft §5.4.2).
    NO_OP = "no-op"
    # Holds a whole ClusterConfig (``ClusterConfig.encode``); takes effect once appended.
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    data: bytes = b""
    kind: EntryKind = EntryKind.COMMAND


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state after applying every entry up to ``index`` (Raft §7), and the
    cluster configuration in effect at ``index``, which the compacted log no longer holds."""

    index: int = 0
    term: int = 0
    data: bytes = b""
    config: ClusterConfig = field(default_factory=ClusterConfig)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before the messages of the same Ready are sent (Raft Figure 2)."""

    term: int = 0
    voted_for: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    sender: str
    recipient: str
    term: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteRequest(Envelope):
    """RequestVote (Raft §5.2). A pre-vote (thesis §9.6) carries the term the sender would take,
    without the sender having taken it."""

    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    # Sent after TimeoutNow: the receiver must not ignore it for having a live leader (§3.10).
    transfer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponse(Envelope):
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequest(Envelope):
    """AppendEntries (Raft §5.3); with no entries it is the leader's heartbeat."""

    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    # The leader's latest ReadIndex round: an answer to it confirms leadership (thesis §6.4).
    read_round: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResponse(Envelope):
    success: bool
    # On success: the index up to which the follower's log now matches the leader's.
    match_index: int = 0
    # On refusal: the prev_log_index refused and the follower's last index, to back off quickly.
    rejected_index: int = 0
    last_index: int = 0
    read_round: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot(Envelope):
    """InstallSnapshot (Raft §7), whole; the transport may stream it in chunks. Answered with
    an AppendResponse, so that the leader's bookkeeping has one path."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow(Envelope):
    """Leadership transfer (thesis §3.10): start an election at once, skipping the pre-vote."""


Message = VoteRequest | VoteResponse | AppendRequest | AppendResponse | InstallSnapshot | TimeoutNow
