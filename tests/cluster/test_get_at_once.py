"""GETs the leader answers at once, from memory, as it reads a connection's requests: they keep
every rule a GET carried out the usual way keeps. Replies stay in request order behind commands
still under way, a GET sees the SET of its id sent before it on its connection, AUTH and MULTI
refuse it, the metrics count it, and a leader that was paused while another was elected serves
nothing stale. (The output limit: test_client_limits; exactly the indexed version: test_cache.)"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kayit.client import KayitClient
from kayit.protocol import error_code
from kayit.server.ports import free_ports
from tests.cluster.conftest import ClusterFactory
from tests.cluster.harness import NodeProcess, exchange, resp, start_lone_node, wait_for

PASSWORD = "get-at-once"
_REPLY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, int]]:
    """A node that leads a cluster of its own, asks for PASSWORD and keeps values in memory
    (the default --cache-mb): its GETs are answered at once."""
    workdir = tmp_path_factory.mktemp("at-once")
    secret = workdir / "client-pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    (metrics_port,) = free_ports(1)
    lone, port = start_lone_node(
        workdir, "--requirepass-file", str(secret), "--metrics-port", str(metrics_port)
    )
    lone.metrics_port = metrics_port
    yield lone, port
    lone.kill()


@pytest.mark.cluster
def test_replies_keep_request_order_and_a_get_sees_the_set_before_it(
    node: tuple[NodeProcess, int],
) -> None:
    _, port = node
    with KayitClient("127.0.0.1", port, password=PASSWORD) as client:
        assert client.set("k", "v1") == b"OK"
        assert client.get("k") == b"v1"
    auth = f"AUTH {PASSWORD}\n".encode()
    # In one write: each GET of k is answered while the SET before it (of another id, or of
    # k itself) is still under way, and must wait its turn; the second must see v2.
    lines = [b"SET other x", b"GET k", b"SET k v2", b"GET k", b"DEL k", b"GET k", b"GET k"]
    replies = exchange(
        port, auth + b"".join(line + b"\n" for line in lines), 1 + len(lines), _REPLY_TIMEOUT
    )
    assert replies == [b"OK", b"OK", b"v1", b"OK", b"v2", b"1", b"NOT_FOUND", b"NOT_FOUND"]


@pytest.mark.cluster
def test_a_value_in_memory_is_refused_before_auth_and_after_multi(
    node: tuple[NodeProcess, int],
) -> None:
    _, port = node
    with KayitClient("127.0.0.1", port, password=PASSWORD) as client:
        assert client.set("secret", "hidden") == b"OK"
        assert client.get("secret") == b"hidden"
    assert exchange(port, b"GET secret\n", 1, _REPLY_TIMEOUT) == [
        b"ERROR NOAUTH Authentication required."
    ]
    in_multi = [
        resp(b"AUTH", PASSWORD.encode()),
        resp(b"MULTI"),
        resp(b"GET", b"secret"),
        resp(b"DISCARD"),
        resp(b"GET", b"secret"),
    ]
    replies = exchange(port, b"".join(in_multi), 6, _REPLY_TIMEOUT)
    assert replies[0] == b"+OK\r"
    assert replies[1].startswith(b"-ERR MULTI is not supported")
    assert replies[2].startswith(b"-ERR") and b"after MULTI" in replies[2]
    assert replies[3:] == [b"+OK\r", b"$6\r", b"hidden\r"]


def _get_metrics(lone: NodeProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{lone.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("command") == "get":
                found[f"{sample.name}:{sample.labels.get('result', '')}"] = sample.value
    return found


@pytest.mark.cluster
def test_gets_answered_at_once_are_counted_with_their_latency(
    node: tuple[NodeProcess, int],
) -> None:
    lone, port = node
    with KayitClient("127.0.0.1", port, password=PASSWORD) as client:
        assert client.set("metered", "m") == b"OK"
        before = _get_metrics(lone)
        assert client.pipeline([b"GET metered"] * 5 + [b"GET never-set"]) == [b"m"] * 5 + [
            b"NOT_FOUND"
        ]
    after = _get_metrics(lone)

    def moved(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("kayit_commands_total:ok") == 5
    assert moved("kayit_commands_total:not_found") == 1
    assert moved("kayit_command_seconds_count:") == 6


@pytest.mark.cluster
def test_mget_and_strlen_from_memory_answer_in_order_and_see_the_set_before_them(
    node: tuple[NodeProcess, int],
) -> None:
    lone, port = node
    with KayitClient("127.0.0.1", port, password=PASSWORD) as client:
        assert client.pipeline([b"SET m1 one", b"SET m2 three"]) == [b"OK", b"OK"]
        assert client.get("m2") == b"three"
    before = _get_metrics(lone)
    requests = [
        resp(b"AUTH", PASSWORD.encode()),
        resp(b"MGET", b"m2", b"never-set", b"m1", b"m2"),
        resp(b"STRLEN", b"m2"),
        # In the same write as the SET before it: it waits for the SET, and sees it.
        resp(b"SET", b"m1", b"uno"),
        resp(b"MGET", b"m1", b"m2"),
    ]
    replies = exchange(port, b"".join(requests), 16, _REPLY_TIMEOUT)
    assert replies == [
        b"+OK\r",
        b"*4\r", b"$5\r", b"three\r", b"$-1\r", b"$3\r", b"one\r", b"$5\r", b"three\r",
        b":5\r",
        b"+OK\r",
        b"*2\r", b"$3\r", b"uno\r", b"$5\r", b"three\r",
    ]  # fmt: skip
    after = _get_metrics(lone)
    # Every id of each read is counted as a GET, whichever way it was answered.
    assert after["kayit_commands_total:ok"] - before.get("kayit_commands_total:ok", 0.0) == 6
    not_found = "kayit_commands_total:not_found"
    assert after[not_found] - before.get(not_found, 0.0) == 1


@pytest.mark.cluster
def test_a_leader_paused_while_another_was_elected_serves_nothing_stale(
    start_cluster: ClusterFactory,
) -> None:
    """The paused leader still believes it leads when it resumes, and holds the old value in
    memory; its lease ran out on the same clock while it was stopped, so it confirms its
    leadership before it answers, finds it deposed, and the GET goes to the new leader."""
    cluster = start_cluster(tolerance=1, members=2, extra=("--cache-mb", "16"))
    old = cluster.leader
    assert cluster.set_many({"x": "old"}) == [b"OK"]
    before = cluster.status()
    with KayitClient("127.0.0.1", cluster.client_port) as client:
        assert client.get("x") == b"old"  # read at once, from memory

    # Opened before the pause: the paused node's kernel keeps taking what is sent on it.
    with socket.create_connection(("127.0.0.1", cluster.client_port), _REPLY_TIMEOUT) as raw:
        old.pause()
        try:

            def new_leader() -> bool:
                try:
                    return cluster.status().term > before.term
                except ConnectionError:
                    return False

            wait_for(new_leader, 30, "a leader in a later term")
            member = next(iter(cluster.members.values()))
            assert member.client_port is not None
            with KayitClient("127.0.0.1", member.client_port, timeout=_REPLY_TIMEOUT) as client:
                assert client.set("x", "new") == b"OK"
            raw.sendall(b"GET x\n")  # read by the old leader as it resumes
        finally:
            old.resume()
        reply = raw.makefile("rb").readline().rstrip(b"\n")
    assert reply == b"new" or error_code(reply) is not None, reply
