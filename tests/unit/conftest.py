"""Fixtures the unit tests share."""

from __future__ import annotations

import os

import pytest

from kayit.storage import disk as disk_module


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths fsynced from now on, in order (one fsync per file, not one syncfs for all)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(disk_module, "_SYNCFS", None)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    return synced
