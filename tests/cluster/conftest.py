from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start a cluster (leader + members as real processes); all are killed at teardown."""
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
