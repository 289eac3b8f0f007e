"""A node's log as an operator reads it: JSON lines with --log-format json, and reports that
say what changed, so an idle node stays quiet."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from kayit.client import KayitClient
from tests.cluster.harness import start_lone_node, wait_for


@pytest.mark.cluster
def test_an_idle_node_reports_once_then_only_what_changed(tmp_path: Path) -> None:
    node, client_port = start_lone_node(tmp_path, "--report-every", "0.1", "--log-format", "json")
    try:
        wait_for(lambda: "0 messages (0 on own disk)" in node.log(), 10, "the first report")
        time.sleep(1.0)  # ten report periods with nothing to say
        with KayitClient("127.0.0.1", client_port) as client:
            assert client.set("k", "v") == b"OK"
        wait_for(lambda: "1 messages (1 on own disk)" in node.log(), 10, "the SET's report")
        time.sleep(0.5)
        assert node.stop() == 0
    finally:
        node.kill()
    entries = [json.loads(line) for line in node.log().splitlines()]  # every line is JSON
    for entry in entries:
        assert set(entry) >= {"time", "level", "logger", "message"}, entry
        assert datetime.fromisoformat(entry["time"]).tzinfo is not None
    reports = [e["message"] for e in entries if e["logger"] == "kayit.report"]
    leading = [text.split(": ", 1)[1] for text in reports if text.startswith("leader ")]
    # A report may fall between the SET's index entry and its copy's promotion on disk.
    between = "1 messages (0 on own disk), TOLERANCE=0, 0 of 0 other nodes alive"
    assert [text for text in leading if text != between] == [
        "0 messages (0 on own disk), TOLERANCE=0, 0 of 0 other nodes alive",
        "1 messages (1 on own disk), TOLERANCE=0, 0 of 0 other nodes alive",
    ]
    assert leading.count(between) <= 1
    assert len(reports) <= len(leading) + 1  # at most a line from before it led
