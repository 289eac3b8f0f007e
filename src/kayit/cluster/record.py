"""The cluster record (``<data dir>/cluster.json``): which cluster the nodes of a data dir
belong to, and where that cluster's nodes are.

A node keeps its own Raft state in ``node-<port>/raft``; losing that directory (a deleted node
dir, a damaged log set aside) makes it a node with no cluster. The record sits beside the node
dirs, so a node that lost its own state still finds out that it belongs to a cluster, and whom
to ask to admit it, instead of forming a second cluster. Every node of the data dir writes the
same file: on entering its cluster and whenever the member addresses it knows change. Writes
go through a temp file of the writer's own and a rename, so readers see one whole version.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kayit.config import ConfigError
from kayit.storage.atomic import sync_directory

RECORD_FILE = "cluster.json"
_FORMAT = 1
_TEMP_PREFIX = f".{RECORD_FILE}."
_TEMP_SUFFIX = ".tmp"
# A temp file this old is a writer's that was killed mid-write: no live writer takes so long.
_STALE_TEMP_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    cluster_id: str
    nodes: tuple[str, ...]  # the gRPC address (host:port) of every member, sorted

    @classmethod
    def of(cls, cluster_id: str, addresses: Iterable[str]) -> ClusterRecord:
        """A record of ``addresses`` in a canonical order, so that equal views compare equal."""
        return cls(cluster_id, tuple(sorted(set(addresses))))

    def encode(self) -> bytes:
        document = {"format": _FORMAT, "cluster_id": self.cluster_id, "nodes": list(self.nodes)}
        return json.dumps(document, indent=1).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> ClusterRecord:
        """Raises ValueError for anything ``encode`` did not write."""
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        if document.get("format") != _FORMAT:
            raise ValueError(f"format {document.get('format')!r}, not {_FORMAT}")
        cluster_id = document.get("cluster_id")
        nodes = document.get("nodes")
        if not (isinstance(cluster_id, str) and cluster_id):
            raise ValueError("no cluster_id")
        if not (isinstance(nodes, list) and all(_is_address(node) for node in nodes)):
            raise ValueError("nodes is not a list of HOST:PORT addresses")
        return cls(cluster_id, tuple(nodes))


def record_path(data_dir: Path) -> Path:
    return data_dir / RECORD_FILE


def read_record(data_dir: Path) -> ClusterRecord | None:
    """The record in ``data_dir``; None if there is none. A record that cannot be read is a
    ConfigError: without it a node that lost its state cannot tell that it must not form a
    cluster of its own."""
    path = record_path(data_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(f"{path} cannot be read: {error}") from error
    try:
        return ClusterRecord.decode(data)
    except (ValueError, UnicodeDecodeError) as error:  # json's errors are ValueErrors too
        raise ConfigError(
            f"{path} is damaged ({error}). It names the cluster the nodes of {data_dir} belong "
            "to: remove it, then start first the nodes whose node dir still holds raft/ (they "
            "write it again). To form a new cluster instead, use an empty data dir"
        ) from None


def write_record(data_dir: Path, record: ClusterRecord) -> None:
    """Replace the record durably. Several nodes may call this at once: each writes a temp
    file of its own, so the file always holds one writer's whole record."""
    path = record_path(data_dir)
    _remove_stale_temps(data_dir)
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=data_dir)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(record.encode())
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    sync_directory(data_dir)


def _remove_stale_temps(data_dir: Path) -> None:
    limit = time.time() - _STALE_TEMP_SECONDS
    for temp in data_dir.glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            if temp.stat().st_mtime < limit:
                temp.unlink()


def _is_address(value: object) -> bool:
    if not isinstance(value, str):
        return False
    host, colon, port = value.rpartition(":")
    return bool(host and colon and port.isdecimal() and 0 < int(port) < 65536)
