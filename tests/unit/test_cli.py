"""The ``kayit`` command's own behaviour: --version, and errors in one line, never a traceback."""

from __future__ import annotations

import importlib.metadata

import pytest

from kayit.cli import main
from kayit.server.ports import free_ports


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"kayit {importlib.metadata.version('kayit')}\n"


@pytest.mark.parametrize(
    ("argv", "code", "error"),
    [
        (["client", "127.0.0.1:notaport"], 2, "kayit client: argument address: not a port "),
        (["client", "1", "127.0.0.1:1,"], 2, "kayit client: argument address: empty address"),
        (["client", "nosuch.invalid:1"], 1, "kayit client: cannot connect to nosuch.invalid:1: "),
        (["node", "--join", "a:b:c:x"], 2, "kayit node: argument --join: not HOST:PORT: "),
        (["status", "[::1"], 2, "kayit status: argument address: not HOST:PORT: '[::1'"),
        (["cluster", "--members", "x"], 2, "kayit cluster: argument --members: invalid int"),
        (["nosuchcommand"], 2, "kayit: argument COMMAND: invalid choice: 'nosuchcommand'"),
    ],
)
def test_errors_are_one_line(
    argv: list[str], code: int, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        returned = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        returned = int(stop.code or 0)
    assert returned == code
    err = capsys.readouterr().err
    assert err.startswith(error) and err.count("\n") == 1, err


def test_a_client_with_nothing_listening_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    assert main(["client", str(port)]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"kayit client: cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused\n"
    )
