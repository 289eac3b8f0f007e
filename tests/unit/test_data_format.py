"""Every node directory says which layout it holds; another layout stops the node at start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from kayit.config import ConfigError
from kayit.server.ports import free_ports
from kayit.storage.data_format import FORMAT_FILE, FORMAT_VERSION, ensure_format
from kayit.storage.disk import DiskManager, FsyncPolicy, IoMode
from kayit.storage.store import MessageStore


def test_a_new_or_empty_single_leader_directory_is_marked_with_the_current_format(
    tmp_path: Path,
) -> None:
    new = tmp_path / "node-5555"
    ensure_format(new)
    assert (new / FORMAT_FILE).read_text() == f"{FORMAT_VERSION}\n"

    empty = tmp_path / "node-5556"  # a single-leader node that never stored anything
    (empty / "messages").mkdir(parents=True)
    (empty / FORMAT_FILE).write_text("1\n")
    ensure_format(empty)
    assert (empty / FORMAT_FILE).read_text() == f"{FORMAT_VERSION}\n"


def test_a_directory_of_format_2_is_marked_3_and_its_pending_files_are_kept(
    tmp_path: Path,
) -> None:
    (tmp_path / "pending").mkdir()
    (tmp_path / "pending" / "k.1.2.msg").write_bytes(b"kept for the store to take over")
    (tmp_path / FORMAT_FILE).write_text("2\n")
    ensure_format(tmp_path)
    assert (tmp_path / FORMAT_FILE).read_text() == f"{FORMAT_VERSION}\n" == "3\n"
    assert (tmp_path / "pending" / "k.1.2.msg").exists()


@pytest.mark.parametrize("marked", [True, False])
@pytest.mark.parametrize("holds", ["messages/a.msg", "journal.log"])
def test_a_single_leader_directory_with_messages_is_refused_and_left_alone(
    tmp_path: Path, marked: bool, holds: str
) -> None:
    (tmp_path / "messages").mkdir()
    (tmp_path / holds).write_bytes(b"kept")
    if marked:
        (tmp_path / FORMAT_FILE).write_text("1\n")
    with pytest.raises(ConfigError, match="single-leader kayit"):
        ensure_format(tmp_path)
    assert (tmp_path / holds).read_bytes() == b"kept"
    assert (tmp_path / FORMAT_FILE).exists() is marked


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"4\n", "data format 4"), (b"", "is damaged"), (b"v1", "is damaged")],
)
def test_another_or_damaged_format_is_refused_and_left_alone(
    tmp_path: Path, content: bytes, words: str
) -> None:
    (tmp_path / FORMAT_FILE).write_bytes(content)
    with pytest.raises(ConfigError, match=words):
        ensure_format(tmp_path)
    assert (tmp_path / FORMAT_FILE).read_bytes() == content


def test_the_store_refuses_to_open_a_directory_of_another_format(tmp_path: Path) -> None:
    (tmp_path / FORMAT_FILE).write_text("7\n")
    store = MessageStore(DiskManager(tmp_path, IoMode.BUFFERED, FsyncPolicy.NEVER))

    async def open_store() -> None:
        try:
            await store.open()
        finally:
            await store.close()

    with pytest.raises(ConfigError, match="data format 7"):
        asyncio.run(open_store())


@pytest.mark.cluster
def test_a_node_on_a_directory_of_another_format_exits_2_saying_why(tmp_path: Path) -> None:
    grpc_port, client_port = free_ports(2)
    node_dir = tmp_path / f"node-{grpc_port}"
    node_dir.mkdir()
    (node_dir / FORMAT_FILE).write_text("4\n")
    result = subprocess.run(
        [
            sys.executable, "-m", "kayit", "node",
            "--grpc-port", str(grpc_port), "--client-port", str(client_port),
            "--data-dir", str(tmp_path), "--join", "127.0.0.1:1",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "data format 4" in result.stderr
    assert (node_dir / FORMAT_FILE).read_text() == "4\n"
