"""The pure parts of benchmarks/suite.py: matrix, ratios, the Markdown table, output parsing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUITE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "suite.py"


def _load_suite() -> ModuleType:
    """benchmarks/ is not a package: load suite.py by path, without running it."""
    spec = importlib.util.spec_from_file_location("kayit_bench_suite", SUITE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


suite = _load_suite()


def bench(throughput: float, p99: float, errors: int = 0) -> dict[str, Any]:
    return {
        "protocol": "text",
        "connections": 1,
        "pipeline": 1,
        "requests": int(throughput * 3),
        "errors": errors,
        "seconds": 3.0,
        "throughput": throughput,
        "latency_ms": {"p50": p99 / 2, "p95": p99 * 0.8, "p99": p99, "max": p99 * 3},
    }


def result(
    system: str, op: str, conns: int, pipeline: int, tput: float, p99: float, errors: int = 0
) -> Any:
    return suite.measurement(system, suite.Case(op, conns, pipeline), bench(tput, p99, errors))


RESULTS = [
    result("redis", "set", 1, 1, 20000.0, 0.1),
    result("kayit-t0", "set", 1, 1, 5000.0, 0.4),
    result("kayit-t1", "set", 1, 1, 1000.0, 2.0),
    result("kayit-t2", "set", 1, 1, 800.0, 2.5),
    result("redis", "get", 50, 16, 400000.0, 3.0),
    result("kayit-t0", "get", 50, 16, 100000.0, 12.0),
    result("kayit-t1", "get", 50, 16, 40000.0, 150.0),
    result("kayit-t2", "get", 50, 16, 4.0, 1500.0),
]


def rows(table: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]
    ]


def test_matrix_sets_before_gets() -> None:
    full = suite.cases(quick=False)
    assert len(full) == 8
    assert [c.op for c in full] == ["set"] * 4 + ["get"] * 4
    assert {(c.connections, c.pipeline) for c in full} == {(1, 1), (1, 16), (50, 1), (50, 16)}
    quick = suite.cases(quick=True)
    assert set(quick) < set(full)
    assert {c.op for c in quick} == {"set", "get"}


@pytest.mark.parametrize(
    ("value", "reference", "text"),
    [
        (5000.0, 20000.0, "0.25x"),
        (40000.0, 400000.0, "0.10x"),
        (4.0, 400000.0, "<0.001x"),
        (400.0, 400000.0, "0.001x"),
        (30000.0, 20000.0, "1.50x"),
        (250000.0, 20000.0, "12x"),
        (5000.0, None, "n/a"),
        (None, 20000.0, "n/a"),
        (5000.0, 0.0, "n/a"),
    ],
)
def test_ratio(value: float | None, reference: float | None, text: str) -> None:
    assert suite.format_ratio(suite.ratio(value, reference)) == text


def test_table_has_header_rows_and_ratios() -> None:
    table = suite.markdown_table(RESULTS)
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:5] == ["op", "conns", "pipeline", "Redis ops/s", "Redis p99 ms"]
    assert header[-3:] == ["kayit 1 node / Redis", "kayit T=1 / Redis", "kayit T=2 / Redis"]
    assert lines[1].count("|") == len(header) + 1
    set_row, get_row = rows(table)
    assert set_row[:3] == ["SET", "1", "1"]
    assert set_row[3:11] == ["20,000", "0.10", "5,000", "0.40", "1,000", "2.00", "800", "2.50"]
    assert set_row[11:] == ["0.25x", "0.050x", "0.040x"]
    assert get_row[:3] == ["GET", "50", "16"]
    assert get_row[3:11] == ["400,000", "3.00", "100,000", "12.0", "40,000", "150", "4", "1500"]
    assert get_row[11:] == ["0.25x", "0.10x", "<0.001x"]


def test_rows_follow_the_matrix_order() -> None:
    shuffled = [
        result("kayit-t0", op, conns, pipeline, 1000.0, 1.0)
        for op, conns, pipeline in [("get", 1, 1), ("set", 50, 16), ("set", 1, 16), ("set", 1, 1)]
    ]
    table = suite.markdown_table(shuffled)
    assert [row[:3] for row in rows(table)] == [
        ["SET", "1", "1"],
        ["SET", "1", "16"],
        ["SET", "50", "16"],
        ["GET", "1", "1"],
    ]


def test_ratios_are_na_without_redis() -> None:
    without_redis = [r for r in RESULTS if r["system"] != "redis"]
    table = suite.markdown_table(without_redis)
    for row in rows(table):
        assert row[3:5] == ["n/a", "n/a"]  # the Redis columns
        assert row[-3:] == ["n/a", "n/a", "n/a"]


def test_failed_measurement_is_na_and_noted() -> None:
    failed = suite.measurement("kayit-t1", suite.Case("set", 1, 1), None, "exited with code 1")
    with_failure = [r for r in RESULTS if r["system"] != "kayit-t1"] + [failed]
    row = rows(suite.markdown_table(with_failure))[0]
    assert row[7:9] == ["n/a", "n/a"]
    assert row[-2] == "n/a"
    notes = suite.problems([*with_failure, result("redis", "get", 1, 1, 10.0, 1.0, errors=3)])
    assert notes == [
        "kayit T=1 SET c=1 P=1: failed: exited with code 1",
        "Redis GET c=1 P=1: 3 errors in 30 requests",
    ]


def test_report_has_machine_line_and_notes() -> None:
    machine = {
        "date": "2025-01-02 03:04 UTC",
        "cpu_model": "Test CPU",
        "cores": 2,
        "os": "Linux 6.1",
        "python": "3.11.9",
        "redis_version": None,
        "kayit_commit": "abc1234",
        "data_fs": "ext4",
    }
    settings = {"duration": 3.0, "size": 64, "keyspace": 10000, "kayit_protocol": "text"}
    report = suite.markdown_report(RESULTS, machine, settings, ["Redis skipped: not installed"])
    assert "2025-01-02 03:04 UTC on Test CPU (2 cores)" in report
    assert "no redis-server" in report
    assert "--duration 3`" in report
    assert "- Redis skipped: not installed" in report
    assert suite.markdown_table(RESULTS) in report


def test_parse_bench_output_tolerates_stray_lines() -> None:
    line = '{"throughput": 1.5, "latency_ms": {"p99": 2.0}}'
    assert suite.parse_bench_output(line)["throughput"] == 1.5
    assert suite.parse_bench_output(f"warming up\n{line}\n")["latency_ms"]["p99"] == 2.0
    with pytest.raises(suite.BenchError):
        suite.parse_bench_output("Traceback ...\n")


def test_log_scale_only_for_a_wide_spread() -> None:
    assert not suite.needs_log_scale([1000.0, 5000.0, 20000.0])
    assert suite.needs_log_scale([100.0, 400000.0])
    assert not suite.needs_log_scale([0.0, 0.0])


def test_free_ports_avoid_the_default_ones() -> None:
    ports = suite.free_ports(5)
    assert len(set(ports)) == 5
    assert not {5555, 6666} & set(ports)


def test_short_numbers() -> None:
    assert [suite.short_number(v) for v in (950.0, 1234.0, 41230.0, 2_500_000.0)] == [
        "950",
        "1.2k",
        "41k",
        "2.5M",
    ]


def test_chart_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    suite.write_chart(RESULTS, suite.SYSTEMS, path, "title\nmachine, date")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_fill_requests_in_both_protocols() -> None:
    assert suite.set_request("text", b"key:000000007", b"vvvv") == b"SET key:000000007 vvvv\n"
    assert suite.set_request("resp", b"k", b"vv") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n"


def test_a_run_with_errors_is_a_result_and_a_failure_to_run_is_not() -> None:
    line = '{"throughput": 1.5, "latency_ms": {"p99": 2.0}, "errors": 3}'
    with_errors = [sys.executable, "-c", f"print({line!r}); raise SystemExit(1)"]
    assert suite.run_bench(with_errors, timeout=30)["errors"] == 3
    no_server = [sys.executable, "-c", "import sys; sys.exit('kayit bench: cannot connect')"]
    with pytest.raises(suite.BenchError, match="exited with code 1: kayit bench: cannot connect"):
        suite.run_bench(no_server, timeout=30)
