"""The committed Protobuf/gRPC code must be exactly what kayit.proto generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["kayit_pb2.py", "kayit_pb2.pyi", "kayit_pb2_grpc.py"]


def test_committed_generated_code_matches_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    for name in GENERATED:
        fresh = (tmp_path / "kayit" / "rpc" / name).read_text()
        committed = (ROOT / "src" / "kayit" / "rpc" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen-proto"
