"""Raft consensus for kayit's replicated metadata: a pure state machine and its simulation.

``RaftNode`` does no I/O; a driver persists, sends and applies what each ``Ready`` says (see
``kayit.consensus.node``). Membership changes go through the log (``kayit.consensus.membership``).
``kayit.consensus.simulation`` checks the safety invariants over seeded fault schedules.
"""

from kayit.consensus.membership import (
    ChangeKind,
    ClusterConfig,
    ConfigChange,
    ConfigChangeError,
    ConfigChangeInProgress,
)
from kayit.consensus.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    Snapshot,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from kayit.consensus.node import (
    NotLeaderError,
    PersistedState,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
    Role,
)

__all__ = [
    "AppendRequest",
    "AppendResponse",
    "ChangeKind",
    "ClusterConfig",
    "ConfigChange",
    "ConfigChangeError",
    "ConfigChangeInProgress",
    "Entry",
    "EntryKind",
    "HardState",
    "InstallSnapshot",
    "Message",
    "NotLeaderError",
    "PersistedState",
    "RaftConfig",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
]
