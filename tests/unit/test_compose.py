"""compose.yaml, as Debian's docker-compose reads it (`config` needs no Docker engine; images
cannot be pulled or built here): five nodes in containers of their own, each with its own
data and certificate volumes, announcing its service name, and flags that `kayit node` takes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kayit.cli import _parser
from kayit.config import NodeConfig

ROOT = Path(__file__).resolve().parents[2]
NODES = [f"node{n}" for n in range(1, 6)]


@pytest.fixture(scope="module")
def config() -> str:
    """compose.yaml as docker-compose resolves it: YAML in a normal form, lists in blocks."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose")
    result = subprocess.run(
        ["docker-compose", "--file", str(ROOT / "compose.yaml"), "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _block(text: str, key: str, indent: int) -> list[str]:
    """The lines under ``key:`` at ``indent`` spaces, up to the next key at that indent."""
    lines = text.splitlines()
    start = lines.index(" " * indent + f"{key}:") + 1
    block = []
    for line in lines[start:]:
        if len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith("- "):
            break
        block.append(line)
    return block


def _list(service: list[str], key: str) -> list[str]:
    """A list of strings of a service, as docker-compose prints it: one `- item` a line."""
    items = _block("\n".join(service), key, 4)
    return [item.strip().removeprefix("- ").strip("'\"") for item in items]


def test_five_nodes_and_the_jobs_that_set_them_up(config: str) -> None:
    services = {line.strip().rstrip(":") for line in _block(config, "services", 0)
                if len(line) - len(line.lstrip()) == 2}  # fmt: skip
    assert services == {"certs", "kayit", *NODES}


@pytest.mark.parametrize("node", NODES)
def test_each_node_announces_its_name_and_keeps_its_own_volumes(config: str, node: str) -> None:
    service = _block(config, node, 2)
    argv = _list(service, "entrypoint") + _list(service, "command")
    assert argv[:2] == ["kayit", "node"]
    args = _parser().parse_args(argv[1:])  # kayit's own parser: every flag must be one of its
    assert args.advertise == f"{node}:5555"
    assert args.host == "0.0.0.0" and args.grpc_port == 5555 and args.client_port == 6666
    NodeConfig(host=args.host, advertise=args.advertise)  # accepted: it never announces 0.0.0.0
    assert args.tls_dir == Path("/etc/kayit/tls") and args.tls_name == node
    assert args.requirepass_file == Path("/etc/kayit/tls/password")
    assert args.peers == [f"{other}:5555" for other in NODES if other != node]
    assert args.leader == (node == "node1")  # one founder; the others only join
    assert _list(service, "volumes") == [
        f"data-{node}:/var/lib/kayit:rw",
        f"tls-{node}:/etc/kayit/tls:ro",
    ]
    assert f"    hostname: {node}" in service
