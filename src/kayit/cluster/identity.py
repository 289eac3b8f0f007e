"""Who a node is in its cluster, kept beside its Raft state (``<node dir>/raft``).

- ``node-id``: the node's id, made at random the first time the node starts with no Raft state.
  It lives in the Raft directory, never beside it: an id stands for that Raft state (the votes
  it cast, the entries it acknowledged), so a node that lost the one must lose the other and
  join again as a new node; its old id is then removed through the log.
- ``cluster``: what the node must know at a restart before its log is replayed (JSON): the
  cluster's id, which the Raft messages carry; the voters the cluster started with, which the
  Raft node needs while its log holds no configuration yet; the TOLERANCE its founder formed it
  with; and the addresses of the members it knows, to reach them before it has the metadata.

Both are replaced durably. ``FileStorage`` creates the directory, so it is opened first. A
missing or damaged one beside Raft state is ``RaftStateDamaged``, as damage to that state is.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from kayit.consensus.file_storage import RaftStateDamaged
from kayit.consensus.node import PersistedState
from kayit.storage.atomic import replace_durably

NODE_ID_FILE = "node-id"
CLUSTER_FILE = "cluster"

_NODE_ID = re.compile(r"[0-9a-f]{12}")
_CLUSTER_FORMAT = 1
_REJOIN = "move the raft directory aside and restart the node so that it joins as a new node"


def new_node_id() -> str:
    """12 hex digits: 48 random bits, short enough to read in logs and index entries."""
    return secrets.token_hex(6)


def new_cluster_id() -> str:
    return secrets.token_hex(8)


def has_raft_state(state: PersistedState) -> bool:
    """Whether the node ever persisted anything Raft counts on (a term, a vote, entries)."""
    return state != PersistedState()


def node_id_in(raft_dir: Path, state: PersistedState) -> str:
    """The id stored in ``raft_dir``; a new one, stored, if the node has no Raft state yet.
    A missing or damaged id beside Raft state is RaftStateDamaged: that state is no one's."""
    path = raft_dir / NODE_ID_FILE
    try:
        text = path.read_bytes().decode("ascii", errors="replace").strip()
    except FileNotFoundError:
        if has_raft_state(state):
            raise RaftStateDamaged(f"{path} is missing beside raft state", _REJOIN) from None
        node_id = new_node_id()
        replace_durably(path, f"{node_id}\n".encode("ascii"))
        return node_id
    if not _NODE_ID.fullmatch(text):
        raise RaftStateDamaged(f"{path} is damaged (it holds {text[:20]!r})", _REJOIN)
    return text


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    cluster_id: str
    # The configuration while the log holds none: the founder alone for the node that formed
    # the cluster, nobody for one that joined (it learns the configuration from the leader).
    initial_voters: tuple[str, ...]
    # The TOLERANCE the cluster is formed with; once formed, the committed one counts.
    tolerance: int
    peers: Mapping[str, str] = field(default_factory=dict)  # member id -> address

    def encode(self) -> bytes:
        document = {
            "format": _CLUSTER_FORMAT,
            "cluster_id": self.cluster_id,
            "initial_voters": list(self.initial_voters),
            "tolerance": self.tolerance,
            "peers": dict(self.peers),
        }
        return json.dumps(document, indent=1).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> ClusterFacts:
        """Raises ValueError for anything ``encode`` did not write."""
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != _CLUSTER_FORMAT:
            raise ValueError("not a cluster file of this format")
        cluster_id = document.get("cluster_id")
        voters = document.get("initial_voters")
        tolerance = document.get("tolerance")
        peers = document.get("peers")
        if not (
            isinstance(cluster_id, str)
            and cluster_id
            and isinstance(voters, list)
            and all(isinstance(voter, str) for voter in voters)
            and isinstance(tolerance, int)
            and not isinstance(tolerance, bool)
            and tolerance >= 0
            and isinstance(peers, dict)
            and all(isinstance(value, str) for value in peers.values())
        ):
            raise ValueError("a field is missing or of the wrong type")
        return cls(cluster_id, tuple(voters), tolerance, MappingProxyType(dict(peers)))


def load_cluster_facts(raft_dir: Path, state: PersistedState) -> ClusterFacts | None:
    """None for a node that belongs to no cluster yet. The file is written before the node
    first starts Raft, so Raft state without it is damage (RaftStateDamaged)."""
    path = raft_dir / CLUSTER_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if has_raft_state(state):
            raise RaftStateDamaged(f"{path} is missing beside raft state", _REJOIN) from None
        return None
    try:
        return ClusterFacts.decode(data)
    except ValueError as error:  # json's errors are ValueErrors too
        raise RaftStateDamaged(f"{path} is damaged ({error})", _REJOIN) from None


def store_cluster_facts(raft_dir: Path, facts: ClusterFacts) -> None:
    replace_durably(raft_dir / CLUSTER_FILE, facts.encode())
