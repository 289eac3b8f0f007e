"""tolerance.conf parsing and reading, and the settings a node derives from its flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kayit.config import (
    CLIENT_PORT_OFFSET,
    DEFAULT_PARTIAL_LINE_BUDGET,
    DEFAULT_TOLERANCE,
    MAX_TOLERANCE,
    TOLERANCE_FILE,
    ClientLimits,
    ClientPorts,
    ConfigError,
    NodeConfig,
    Role,
    check_tolerance,
    parse_tolerance,
    read_password_file,
    read_tolerance,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("TOLERANCE=2", 2),
        ("TOLERANCE=2\n", 2),
        ("tolerance = 3", 3),
        ("Tolerance=7", 7),
        ("tOlErAnCe=4\r\n", 4),
        ("2", 2),
        ("  5  \n", 5),
        ("TOLERANCE=0", 0),
        ("TOLERANCE=007", 7),
        (f"TOLERANCE={MAX_TOLERANCE}", MAX_TOLERANCE),
        ("# fault tolerance\n\nTOLERANCE=3\n\n", 3),
        ("TOLERANCE=3  # three copies\n", 3),
        ("# TOLERANCE=9\nTOLERANCE=1\n# TOLERANCE=8\n", 1),
        ("\n\n   \n\t\n6\n", 6),
        ("   # indented comment\nTOLERANCE =\t2", 2),
    ],
)
def test_accepted(text: str, value: int) -> None:
    assert parse_tolerance(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "TOLERANCE=abc",
        "TOLERANCE=",
        "TOLERANCE",
        "TOLERANCE=2.5",
        "TOLERANCE=2 3",
        "TOLERANCE=-1",
        "-1",
        "REPLICAS=2",
        "TOLERANCE=2\nTOLERANCE=3",
        "2\n3\n",
        f"TOLERANCE={MAX_TOLERANCE + 1}",
        "TOLERANCE=1000000",
        "",
        "\n\n",
        "# only a comment\n",
    ],
)
def test_rejected_with_the_file_named(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_tolerance(text, "/etc/kayit/tolerance.conf")
    assert "/etc/kayit/tolerance.conf" in str(raised.value)


def test_default_source_name_is_the_file_name() -> None:
    with pytest.raises(ConfigError, match=f"^{TOLERANCE_FILE}:"):
        parse_tolerance("TOLERANCE=abc")


def test_two_value_lines_reports_how_many() -> None:
    with pytest.raises(ConfigError, match="found 2"):
        parse_tolerance("TOLERANCE=2\nTOLERANCE=3", "t.conf")


def test_empty_file_reports_none_found() -> None:
    with pytest.raises(ConfigError, match="found 0"):
        parse_tolerance("", "t.conf")


def test_out_of_range_names_the_value() -> None:
    with pytest.raises(ConfigError, match=f"not {MAX_TOLERANCE + 1}"):
        parse_tolerance(f"TOLERANCE={MAX_TOLERANCE + 1}", "t.conf")


def test_check_tolerance_bounds() -> None:
    assert check_tolerance(0, "x") == 0
    assert check_tolerance(MAX_TOLERANCE, "x") == MAX_TOLERANCE
    with pytest.raises(ConfigError, match=r"^flag: "):
        check_tolerance(-1, "flag")
    with pytest.raises(ConfigError):
        check_tolerance(MAX_TOLERANCE + 1, "flag")


def test_read_tolerance_missing_file_is_none(tmp_path: Path) -> None:
    assert read_tolerance(tmp_path) is None
    assert read_tolerance(tmp_path / "no-such-dir") is None


def test_read_tolerance_reads_the_file(tmp_path: Path) -> None:
    (tmp_path / TOLERANCE_FILE).write_text("# copies besides the leader's\nTOLERANCE=3\n")
    assert read_tolerance(tmp_path) == 3


def test_read_tolerance_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / TOLERANCE_FILE
    path.write_text("TOLERANCE=many\n")
    with pytest.raises(ConfigError) as raised:
        read_tolerance(tmp_path)
    assert str(path) in str(raised.value)


def test_read_tolerance_non_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / TOLERANCE_FILE
    path.write_bytes(b"TOLERANCE=\xff\n")
    with pytest.raises(ConfigError) as raised:
        read_tolerance(tmp_path)
    assert str(path) in str(raised.value)


def test_read_tolerance_directory_in_place_of_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / TOLERANCE_FILE).mkdir()
    with pytest.raises(ConfigError, match=TOLERANCE_FILE):
        read_tolerance(tmp_path)


def test_node_config_defaults() -> None:
    config = NodeConfig()
    assert config.tolerance == DEFAULT_TOLERANCE == 2
    assert config.node_dir(5555) == Path("data") / "node-5555"


@pytest.mark.parametrize(
    ("config", "grpc_port", "own", "shared"),
    [
        # The course's ports: own port = gRPC port + 1111, and 6666 shared by all.
        (NodeConfig(), 5555, 6666, 6666),
        (NodeConfig(), 5556, 6667, 6666),
        (NodeConfig(role=Role.LEADER), 5555, 6666, 6666),
        (NodeConfig(join="127.0.0.1:5555"), 5618, 6729, 6666),
        # Elsewhere nothing is shared unless asked for.
        (NodeConfig(), 5619, 6730, None),
        (NodeConfig(), 40000, 41111, None),
        (NodeConfig(client_port=7000), 5556, 7000, None),
        (NodeConfig(client_port=7001, shared_client_port=7000), 40001, 7001, 7000),
        (NodeConfig(client_port=7000, shared_client_port=7000), 40000, 7000, 7000),
        (NodeConfig(shared_client_port=0), 5556, 6667, None),
    ],
)
def test_client_ports(config: NodeConfig, grpc_port: int, own: int, shared: int | None) -> None:
    assert config.client_ports(grpc_port) == ClientPorts(own, shared)


def test_a_client_port_past_65535_asks_for_client_port() -> None:
    with pytest.raises(ConfigError, match=r"65536.*--client-port"):
        NodeConfig().client_ports(65536 - CLIENT_PORT_OFFSET)
    assert NodeConfig(client_port=1234).client_ports(65535).own == 1234


def test_the_password_is_the_first_line_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(b"correct horse battery staple\r\nsecond line\n")
    assert read_password_file(path) == b"correct horse battery staple"
    path.write_bytes(b" spaced out ")  # no newline at the end; spaces are the password's
    assert read_password_file(path) == b" spaced out "


@pytest.mark.parametrize("content", [b"", b"\n", b"\nsecret\n"])
def test_an_empty_password_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pass"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="empty"):
        read_password_file(path)


def test_a_missing_password_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere"):
        read_password_file(tmp_path / "nowhere")


def test_the_client_limits_defaults_spare_the_course_client() -> None:
    limits = NodeConfig().client_limits
    assert limits == ClientLimits()
    assert limits.max_clients == 10_000
    assert limits.timeout == 0  # off, as in Redis
    # The course's stress client reads each reply (1 MB at most) before its next command,
    # and sends one line of 1 MB at most.
    assert limits.output_limit >= 8 * 1_000_000
    assert limits.partial_line_budget == DEFAULT_PARTIAL_LINE_BUDGET >= NodeConfig().max_line


def test_the_partial_line_budget_must_hold_one_longest_line() -> None:
    with pytest.raises(ConfigError, match="--partial-line-budget"):
        NodeConfig(max_line=2048, client_limits=ClientLimits(partial_line_budget=1024))
    assert NodeConfig(max_line=2048, client_limits=ClientLimits(partial_line_budget=2048))


def test_a_node_config_does_not_show_its_password() -> None:
    assert "hunter2" not in repr(NodeConfig(requirepass=b"hunter2"))
    with pytest.raises(ConfigError):
        NodeConfig(requirepass=b"two\nlines")


def test_client_and_grpc_hosts_default_to_host() -> None:
    config = NodeConfig(host="10.0.0.1")
    assert (config.client_listen_host, config.grpc_listen_host) == ("10.0.0.1", "10.0.0.1")
    config = NodeConfig(host="10.0.0.1", client_host="0.0.0.0", grpc_host="10.0.0.2")
    assert (config.client_listen_host, config.grpc_listen_host) == ("0.0.0.0", "10.0.0.2")


@pytest.mark.parametrize(
    ("config", "announced"),
    [
        (NodeConfig(), "127.0.0.1:5555"),
        (NodeConfig(host="10.0.0.1"), "10.0.0.1:5555"),
        (NodeConfig(host="10.0.0.1", grpc_host="10.0.0.2"), "10.0.0.2:5555"),
        (NodeConfig(host="0.0.0.0", advertise="node1:5555"), "node1:5555"),
        # A published port may differ from the one bound inside a container.
        (NodeConfig(grpc_host="::", advertise="[2001:db8::1]:15555"), "[2001:db8::1]:15555"),
        # An IPv6 host is announced in brackets, as the others must dial it.
        (NodeConfig(host="::1"), "[::1]:5555"),
        (NodeConfig(host="10.0.0.1", grpc_host="2001:db8::2"), "[2001:db8::2]:5555"),
    ],
)
def test_the_announced_address(config: NodeConfig, announced: str) -> None:
    assert config.announced_address(5555) == announced


@pytest.mark.parametrize(
    ("hosts", "flag"),
    [
        ({"host": "0.0.0.0"}, "--host 0.0.0.0"),
        ({"host": "10.0.0.1", "grpc_host": "::"}, "--grpc-host ::"),
        ({"grpc_host": "[::]"}, "--grpc-host [::]"),
    ],
)
def test_every_address_is_never_announced_without_advertise(
    hosts: dict[str, str], flag: str
) -> None:
    every = rf"^{re.escape(flag)} listens on every address.*--advertise"
    with pytest.raises(ConfigError, match=every):
        NodeConfig(**hosts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("advertise", "problem"),
    [
        ("0.0.0.0:5555", "every address of this host"),
        ("[::]:5555", "every address of this host"),
        (":::5555", "every address of this host"),
        ("node1", "expected HOST:PORT"),
        ("node1:", "expected HOST:PORT"),
        (":5555", "expected HOST:PORT"),
        ("node1:70000", "expected HOST:PORT"),
        ("node1:http", "expected HOST:PORT"),
    ],
)
def test_advertise_must_be_an_address_the_others_can_dial(advertise: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--advertise {re.escape(advertise)}: .*{problem}"):
        NodeConfig(advertise=advertise)
