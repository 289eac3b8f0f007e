"""A randomized fault test: clients write and read while members are killed with SIGKILL and
restarted, never more than TOLERANCE dead at once. Every acknowledged SET must read back.

Its length is KAYIT_FAULT_SECONDS (default 60); for an hour by hand:
    KAYIT_FAULT_SECONDS=3600 ./run-tests -k fault -s
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

import pytest

from kayit.client import KayitClient
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import Cluster, wait_for

TOLERANCE = 2
MEMBERS = 4
CLIENTS = 4
KEYS_PER_CLIENT = 25


@dataclass
class Tally:
    acked: int = 0
    failed: int = 0
    reads: int = 0
    mismatches: list[str] = field(default_factory=list)
    last: dict[str, bytes] = field(default_factory=dict)  # key -> last acknowledged value


def _client(cluster: Cluster, number: int, stop: threading.Event, tally: Tally) -> None:
    """Owns its keys alone, so the last acknowledged value of each is well defined."""
    rng = random.Random(number)
    keys = [f"c{number}-{k}" for k in range(KEYS_PER_CLIENT)]
    sequence = 0
    with KayitClient("127.0.0.1", cluster.client_port) as client:
        while not stop.is_set():
            key = rng.choice(keys)
            if rng.random() < 0.7:
                sequence += 1
                value = f"{key} v{sequence} " + "x" * rng.randrange(5, 2000)
                reply = client.set(key, value)
                if reply == b"OK":
                    tally.acked += 1
                    tally.last[key] = value.encode()
                else:
                    tally.failed += 1
            else:
                reply = client.get(key)
                tally.reads += 1
                if reply.startswith(b"ERROR "):
                    continue
                expected = tally.last.get(key, b"NOT_FOUND")
                if reply != expected:
                    tally.mismatches.append(f"GET {key}: {reply[:40]!r} != {expected[:40]!r}")


def _inject_faults(cluster: Cluster, seconds: float, rng: random.Random) -> int:
    faults = 0
    dead: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 2.5))
        if dead and (len(dead) == TOLERANCE or rng.random() < 0.5):
            port = dead.pop(rng.randrange(len(dead)))
            cluster.members[port].start()
            cluster.members[port].wait_ready()
        else:
            port = rng.choice([p for p in cluster.member_ports if p not in dead])
            cluster.members[port].kill()
            dead.append(port)
            faults += 1
    for port in dead:
        cluster.members[port].start()
        cluster.members[port].wait_ready()
    return faults


@pytest.mark.cluster
def test_acknowledged_sets_survive_random_member_crashes(start_cluster: ClusterFactory) -> None:
    seconds = float(os.environ.get("KAYIT_FAULT_SECONDS", "60"))
    cluster = start_cluster(
        tolerance=TOLERANCE,
        members=MEMBERS,
        extra=("--repair-after", "3", "--fsync", "always", "--cache-mb", "64"),
    )
    tallies = [Tally() for _ in range(CLIENTS)]
    stop = threading.Event()
    clients = [
        threading.Thread(target=_client, args=(cluster, n, stop, tallies[n]), daemon=True)
        for n in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    faults = _inject_faults(cluster, seconds, random.Random(7))
    stop.set()
    for thread in clients:
        thread.join(timeout=60)
    cluster.wait_alive(MEMBERS)

    last = {key: value for tally in tallies for key, value in tally.last.items()}
    wrong = cluster.misread(last)
    acked = sum(t.acked for t in tallies)
    failed = sum(t.failed for t in tallies)
    reads = sum(t.reads for t in tallies)
    mismatches = [m for t in tallies for m in t.mismatches]
    print(
        f"\nfault test, {seconds:.0f} s: SETs acked {acked}, SETs failed {failed}, "
        f"reads {reads}, faults injected {faults}, "
        f"mismatches {len(mismatches) + len(wrong)}"
    )
    assert acked > 0 and faults > 0
    assert mismatches == []
    assert wrong == []

    # The members' copies alone must also hold every acknowledged value: with the leader
    # restarted (its cache empty) and its copies gone, every GET is served by a member.
    time.sleep(3)  # reconciliation of the members restarted last
    cluster.leader.kill()
    for path in cluster.messages_dir(cluster.leader_port).glob("*.msg"):
        path.unlink()
    cluster.leader.start()
    wait_for(cluster.client_port_open, 20, "the restarted leader")
    cluster.wait_alive(MEMBERS)
    assert cluster.misread(last) == []
