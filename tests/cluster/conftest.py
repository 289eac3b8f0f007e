from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster
from tests.conftest import CALL_FAILED

# Lines of each node's log shown when a test fails: enough to tell a flake's cause in CI.
LOG_TAIL = 40

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def start_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start a cluster (leader + members as real processes); all are killed at teardown, and
    if the test failed, the end of each node's log is printed."""
    started: list[Cluster] = []

    def start(
        *,
        tolerance: int,
        members: int,
        extra: tuple[str, ...] = (),
        shared_client_port: bool = False,
        tls: bool = False,
        metrics: bool = False,
    ) -> Cluster:
        cluster = Cluster(
            tmp_path,
            tolerance=tolerance,
            members=members,
            extra=extra,
            shared_client_port=shared_client_port,
            tls=tls,
            metrics=metrics,
        )
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.close()
        if request.node.stash.get(CALL_FAILED, False):
            for node in cluster.nodes:
                tail = node.log().splitlines()[-LOG_TAIL:]
                print(f"---- last {len(tail)} lines of {node.name}'s log", *tail, sep="\n")
