"""The cluster record a data dir's nodes share: what it holds, damage, concurrent writers."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.cluster.record import (
    RECORD_FILE,
    ClusterRecord,
    read_record,
    record_path,
    write_record,
)
from kayit.config import ConfigError

addresses = st.builds(
    "{}:{}".format,
    st.sampled_from(["127.0.0.1", "10.0.0.7", "node-a.example", "::1"]),
    st.integers(1, 65535),
)


@given(cluster_id=st.text(min_size=1, max_size=20), nodes=st.lists(addresses, max_size=8))
def test_a_record_reads_back_as_written(cluster_id: str, nodes: list[str]) -> None:
    record = ClusterRecord.of(cluster_id, nodes)
    assert ClusterRecord.decode(record.encode()) == record
    assert list(record.nodes) == sorted(set(nodes))


def test_a_data_dir_without_a_record_has_none(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None


def test_write_then_read(tmp_path: Path) -> None:
    record = ClusterRecord.of("c0ffee", ["127.0.0.1:5556", "127.0.0.1:5555"])
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    assert record_path(tmp_path) == tmp_path / RECORD_FILE
    document = json.loads((tmp_path / RECORD_FILE).read_text())
    assert document == {
        "format": 1,
        "cluster_id": "c0ffee",
        "nodes": ["127.0.0.1:5555", "127.0.0.1:5556"],
    }
    assert [path.name for path in tmp_path.iterdir()] == [RECORD_FILE]  # no temp file left


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b"", "is damaged"),
        (b'{"format": 1, "cluster_id": "c0ff', "is damaged"),
        (b"\xff\xfe", "is damaged"),
        (b"[]", "is damaged (not a JSON object)"),
        (b'{"format": 2, "cluster_id": "c", "nodes": []}', "is damaged (format 2, not 1)"),
        (b'{"format": 1, "nodes": []}', "is damaged (no cluster_id)"),
        (b'{"format": 1, "cluster_id": "c", "nodes": ["5555"]}', "not a list of HOST:PORT"),
        (b'{"format": 1, "cluster_id": "c", "nodes": "a:1"}', "not a list of HOST:PORT"),
        (b'{"format": 1, "cluster_id": "c", "nodes": ["a:0"]}', "not a list of HOST:PORT"),
    ],
)
def test_a_damaged_record_is_a_config_error_naming_the_file(
    tmp_path: Path, content: bytes, complaint: str
) -> None:
    (tmp_path / RECORD_FILE).write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        read_record(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / RECORD_FILE} ")
    assert complaint in message
    assert "use an empty data dir" in message


def test_concurrent_writers_leave_one_whole_record(tmp_path: Path) -> None:
    records = [
        ClusterRecord.of(f"cluster-{n}", [f"127.0.0.1:{5555 + m}" for m in range(n + 1)])
        for n in range(4)
    ]
    seen: list[ClusterRecord | None] = []
    errors: list[BaseException] = []
    writing = threading.Event()

    def write(record: ClusterRecord) -> None:
        try:
            for _ in range(25):
                write_record(tmp_path, record)
        except BaseException as error:
            errors.append(error)

    def read() -> None:
        while writing.is_set():
            try:
                seen.append(read_record(tmp_path))
            except BaseException as error:
                errors.append(error)
                return

    writing.set()
    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(record,)) for record in records]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    writing.clear()
    reader.join()

    assert errors == []
    assert read_record(tmp_path) in records
    assert {found for found in seen if found is not None} <= set(records)
    assert [path.name for path in tmp_path.iterdir()] == [RECORD_FILE]


def test_a_temp_file_left_by_a_killed_writer_is_removed_once_stale(tmp_path: Path) -> None:
    stale = tmp_path / f".{RECORD_FILE}.abc123.tmp"
    fresh = tmp_path / f".{RECORD_FILE}.def456.tmp"  # maybe another writer's, under way
    stale.write_bytes(b"{")
    fresh.write_bytes(b"{")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    write_record(tmp_path, ClusterRecord.of("c", ["127.0.0.1:5555"]))
    assert not stale.exists()
    assert fresh.exists()
