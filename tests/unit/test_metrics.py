"""The metrics port's HTTP answers, the command meters, and the latency quantiles the
dashboard draws."""

from __future__ import annotations

import asyncio
import math
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kayit.config import ConfigError, NodeConfig
from kayit.metrics.history import CommandHistory, quantile
from kayit.metrics.http import MetricsServer
from kayit.metrics.instruments import NodeMetrics
from kayit.protocol import ErrorCode
from kayit.server.outcome import NOT_FOUND_OUTCOME, STORED, Failed, Found
from kayit.server.ports import free_ports


async def _request(port: int, raw: bytes) -> tuple[bytes, bytes]:
    """(status line and headers, body) of one raw request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


async def _cluster_json() -> bytes | None:
    return None  # a node still starting


def _served(metrics: NodeMetrics, *requests: bytes) -> list[tuple[bytes, bytes]]:
    async def run() -> list[tuple[bytes, bytes]]:
        (port,) = free_ports(1)
        server = MetricsServer(metrics.registry, b"<html>page</html>", _cluster_json)
        await server.start("127.0.0.1", port, "--metrics-port")
        try:
            return [await _request(port, raw) for raw in requests]
        finally:
            server.close()

    return asyncio.run(run())


def test_metrics_parse_and_count_each_outcome_of_a_command() -> None:
    metrics = NodeMetrics()
    metrics.sets.record(STORED, 0.002)
    metrics.sets.record(Failed(ErrorCode.NOREPLICAS, "too few"), 0.001)
    metrics.gets.record(Found(b"x"), 0.0001)
    metrics.gets.record(NOT_FOUND_OUTCOME, 0.0001)
    metrics.gets.record(Failed(ErrorCode.LIMIT, "an unexpected code"), 0.0001)
    ((head, body),) = _served(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    counts = {
        (sample.labels["command"], sample.labels["result"]): sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == "kayit_commands"
        for sample in family.samples
        if sample.name == "kayit_commands_total"
    }
    assert counts[("set", "ok")] == 1
    assert counts[("set", "noreplicas")] == 1
    assert counts[("set", "timeout")] == 0  # there from the start
    assert counts[("get", "ok")] == 1
    assert counts[("get", "not_found")] == 1
    assert counts[("get", "limit")] == 1
    set_buckets = {
        sample.labels["le"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        if family.name == "kayit_command_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["command"] == "set"
    }
    # Cumulative, and a value on a bound is in its bucket: 0.001 and 0.002 were observed.
    assert (set_buckets["0.0005"], set_buckets["0.001"], set_buckets["0.0025"]) == (0, 1, 2)
    assert set_buckets["+Inf"] == 2


def test_the_metrics_port_answers_only_what_it_serves() -> None:
    answers = _served(
        NodeMetrics(),
        b"HEAD / HTTP/1.1\r\n\r\n",
        b"GET /?refresh=1 HTTP/1.1\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"GET /nothing HTTP/1.1\r\n\r\n",
        b"GET /cluster.json HTTP/1.1\r\n\r\n",
        b"hello there\r\n\r\n",
    )
    head, body = answers[0]
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 17" in head and body == b""
    assert answers[1][1] == b"<html>page</html>"
    assert answers[2][0].startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in answers[2][0]
    assert answers[3][0].startswith(b"HTTP/1.1 404")
    assert answers[4][0].startswith(b"HTTP/1.1 503")
    assert answers[5][0].startswith(b"HTTP/1.1 400")


def test_a_metrics_port_taken_is_a_config_error_naming_it() -> None:
    async def run() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            server = MetricsServer(NodeMetrics().registry, b"", _cluster_json)
            with pytest.raises(ConfigError, match=f"127.0.0.1:{port} \\(--metrics-port\\)"):
                await server.start("127.0.0.1", port, "--metrics-port")

    asyncio.run(run())


def test_quantiles_interpolate_within_their_bucket() -> None:
    buckets = [(0.001, 0.0), (0.01, 10.0), (0.1, 20.0), (math.inf, 20.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.25, buckets) == pytest.approx(0.0055)
    assert quantile(0.99, [(0.001, 0.0), (math.inf, 5.0)]) == 0.001  # past the last bound
    assert quantile(0.5, [(0.001, 0.0), (math.inf, 0.0)]) is None


def test_the_history_samples_the_rate_and_latency_of_the_last_interval() -> None:
    metrics = NodeMetrics()
    history = CommandHistory(metrics)
    for _ in range(10):
        metrics.sets.record(STORED, 0.003)
    metrics.gets.record(Failed(ErrorCode.NOLEADER, "none"), 0.003)
    metrics.forwarded_in.inc(22)
    history.sample()
    history.sample()  # nothing since the first
    first, second = history.samples()
    assert first["per_second"] is not None and first["per_second"] > 0
    assert first["errors_per_second"] == pytest.approx(first["per_second"] / 11)
    assert first["forwarded_per_second"] == pytest.approx(first["per_second"] * 2)
    assert first["p50_ms"] is not None and 2.5 <= first["p50_ms"] <= 5.0
    assert second["per_second"] == 0 and second["p50_ms"] is None


def test_only_a_metrics_port_given_must_be_had() -> None:
    async def run() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = holder.getsockname()[1]
            if taken - 2222 < 1:
                pytest.skip("the kernel handed out a port below 2223")
            server = MetricsServer(NodeMetrics().registry, b"", _cluster_json)
            # The default (the gRPC port + 2222) taken: the node runs without metrics.
            assert not await server.open(NodeConfig(), grpc_port=taken - 2222)
            with pytest.raises(ConfigError, match="--metrics-port"):
                await server.open(NodeConfig(metrics_port=taken), grpc_port=5555)
        assert not await server.open(NodeConfig(metrics_port=0), grpc_port=5555)
        assert not await server.open(NodeConfig(), grpc_port=65000)  # 67222: out of range

    asyncio.run(run())
