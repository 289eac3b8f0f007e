"""A node whose metadata log cannot be written stops, and says why, rather than run on with a
view of its cluster that never changes again."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import wait_for


@pytest.mark.cluster
@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_a_node_that_cannot_append_to_its_metadata_log_stops_and_says_why(
    start_cluster: ClusterFactory,
) -> None:
    # TOLERANCE=0: the members hold no copies, but append every SET's entry to their log.
    cluster = start_cluster(tolerance=0, members=2)
    cluster.set_many({f"k{n}": "v" for n in range(2000)})
    member = cluster.members[cluster.member_ports[0]]
    assert member.process is not None
    log_file = cluster.node_dir(member.grpc_port) / "raft" / "log"
    wait_for(lambda: log_file.stat().st_size > 2 * len(member.log()), 10, "a log bigger")
    # No file of the member's may grow past the log's size now (EFBIG): its next append fails,
    # while its own output, smaller, still has room to say so.
    limit = log_file.stat().st_size
    subprocess.run(["prlimit", f"--pid={member.process.pid}", f"--fsize={limit}"], check=True)

    with cluster.client() as client:
        assert client.set("after", "v") == b"OK"  # the leader and the other member: a majority
    assert member.process.wait(timeout=20) == 2
    assert "the cluster metadata could not be written here" in member.log()
    with cluster.client() as client:
        assert client.get("after") == b"v"
        assert client.get("k1999") == b"v"
