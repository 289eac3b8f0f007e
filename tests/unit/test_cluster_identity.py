"""A node's id and cluster facts, kept in its raft directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.cluster.identity import (
    CLUSTER_FILE,
    NODE_ID_FILE,
    ClusterFacts,
    load_cluster_facts,
    node_id_in,
    store_cluster_facts,
)
from kayit.config import ConfigError
from kayit.consensus.file_storage import FileStorage
from kayit.consensus.messages import HardState
from kayit.consensus.node import PersistedState
from kayit.storage.disk import FsyncPolicy


def open_raft_dir(raft_dir: Path) -> PersistedState:
    storage = FileStorage(raft_dir, FsyncPolicy.NEVER)
    try:
        return storage.load()
    finally:
        storage.close()


def test_a_node_keeps_its_id_until_its_raft_dir_is_lost(tmp_path: Path) -> None:
    raft_dir = tmp_path / "node-5555" / "raft"
    first = node_id_in(raft_dir, open_raft_dir(raft_dir))
    assert len(first) == 12 and int(first, 16) >= 0
    assert node_id_in(raft_dir, open_raft_dir(raft_dir)) == first
    shutil.rmtree(raft_dir)
    assert node_id_in(raft_dir, open_raft_dir(raft_dir)) != first


def test_raft_state_without_its_id_is_damage(tmp_path: Path) -> None:
    raft_dir = tmp_path / "raft"
    open_raft_dir(raft_dir)
    voted = PersistedState(hard_state=HardState(term=3, voted_for="abc"))
    with pytest.raises(ConfigError, match="missing beside raft state"):
        node_id_in(raft_dir, voted)
    (raft_dir / NODE_ID_FILE).write_bytes(b"\x00\x01garbage")
    with pytest.raises(ConfigError, match="damaged"):
        node_id_in(raft_dir, voted)


def test_cluster_facts_survive_a_restart(tmp_path: Path) -> None:
    fresh, voted = PersistedState(), PersistedState(hard_state=HardState(term=1))
    assert load_cluster_facts(tmp_path, fresh) is None
    with pytest.raises(ConfigError, match="missing beside raft state"):
        load_cluster_facts(tmp_path, voted)
    facts = ClusterFacts("c0ffee", ("aaaaaaaaaaaa",), 2, {"aaaaaaaaaaaa": "10.0.0.1:5555"})
    store_cluster_facts(tmp_path, facts)
    assert load_cluster_facts(tmp_path, voted) == facts
    (tmp_path / CLUSTER_FILE).write_bytes(b'{"format": 1, "cluster_id": ""}')
    with pytest.raises(ConfigError, match="damaged"):
        load_cluster_facts(tmp_path, voted)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
FIELDS = st.sampled_from(["format", "cluster_id", "initial_voters", "tolerance", "peers"])


@given(st.dictionaries(FIELDS, JSON) | st.dictionaries(FIELDS, st.just(1)), st.binary(max_size=8))
def test_decoding_refuses_what_encode_did_not_write(
    document: dict[str, object], junk: bytes
) -> None:
    for data in (json.dumps(document).encode(), junk):
        try:
            facts = ClusterFacts.decode(data)
        except ValueError:
            continue
        assert ClusterFacts.decode(facts.encode()) == facts
        assert isinstance(facts.tolerance, int) and not isinstance(facts.tolerance, bool)
