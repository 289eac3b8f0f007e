"""Who belongs to a Raft cluster: voters, which elect leaders and form quorums, and learners
(non-voting members), which receive the log so that they can catch up before being promoted
(Ongaro's thesis §4.2.1).

A configuration travels as a CONFIG log entry holding the whole new configuration, and takes
effect on a node as soon as that entry is in its log, committed or not (thesis §4.1). Each change
adds, promotes or removes one node, so consecutive configurations differ by at most one voter and
any two of their majorities overlap (thesis §4.3).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class ConfigChangeError(Exception):
    """A configuration change that would change nothing, or names a node wrongly."""


class ConfigChangeInProgress(ConfigChangeError):
    """Refused for now: the leader must first commit its previous change, or an entry of its
    own term; retry once it has."""


class ChangeKind(enum.Enum):
    ADD_LEARNER = "add-learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    kind: ChangeKind
    node_id: str

    @classmethod
    def add_learner(cls, node_id: str) -> ConfigChange:
        return cls(ChangeKind.ADD_LEARNER, node_id)

    @classmethod
    def promote(cls, node_id: str) -> ConfigChange:
        return cls(ChangeKind.PROMOTE, node_id)

    @classmethod
    def remove(cls, node_id: str) -> ConfigChange:
        return cls(ChangeKind.REMOVE, node_id)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.voters & self.learners:
            raise ValueError(f"both voter and learner: {sorted(self.voters & self.learners)}")

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def apply(self, change: ConfigChange) -> ClusterConfig:
        """The configuration after ``change``; raises ConfigChangeError if it changes nothing
        or does not fit (promoting a non-learner, removing a non-member or the last voter)."""
        node = change.node_id
        match change.kind:
            case ChangeKind.ADD_LEARNER:
                if node in self.members:
                    raise ConfigChangeError(f"{node} is already a member")
                return ClusterConfig(self.voters, self.learners | {node})
            case ChangeKind.PROMOTE:
                if node not in self.learners:
                    raise ConfigChangeError(f"{node} is not a learner (add it as one first)")
                return ClusterConfig(self.voters | {node}, self.learners - {node})
            case ChangeKind.REMOVE:
                if node not in self.members:
                    raise ConfigChangeError(f"{node} is not a member")
                if self.voters == {node}:
                    raise ConfigChangeError(f"{node} is the last voter")
                return ClusterConfig(self.voters - {node}, self.learners - {node})

    def encode(self) -> bytes:
        """The bytes of a CONFIG entry: sorted JSON, so that equal configurations encode
        equally."""
        document = {"voters": sorted(self.voters), "learners": sorted(self.learners)}
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClusterConfig:
        """Raises ValueError for anything ``encode`` did not write."""
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError(f"not a cluster configuration: {data!r}")
        voters, learners = document.get("voters"), document.get("learners")
        if not (
            isinstance(voters, list)
            and isinstance(learners, list)
            and all(isinstance(node, str) for node in voters + learners)
        ):
            raise ValueError(f"not a cluster configuration: {data!r}")
        return cls(frozenset(voters), frozenset(learners))
