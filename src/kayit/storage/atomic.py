"""Replace a small file so that after a crash it holds either its old or its new bytes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def replace_durably(path: Path, data: bytes) -> None:
    """If this fails before the rename (a full disk), the temp file is removed and the old
    file stays as it was."""
    temp = path.with_name(path.name + ".tmp")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make the names in ``directory`` (a rename, a new or removed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
