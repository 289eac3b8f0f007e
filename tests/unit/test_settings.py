"""Where each setting comes from: flag > KAYIT_* > kayit.toml > tolerance.conf > default, the
keys derived from the flags, the error lines, and what `kayit config` prints."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kayit.cli import _parser, main
from kayit.config import TOLERANCE_FILE
from kayit.settings import (
    ConfigFile,
    Setting,
    Source,
    apply,
    commands,
    env_name,
    given_on_command_line,
    resolve,
    settable,
)


def _settle(
    argv: list[str],
    environ: dict[str, str] | None = None,
    toml: str | None = None,
    cwd: Path = Path("/nonexistent"),
) -> dict[str, Setting]:
    """The settings of the command ``argv`` names, as main resolves them."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: str = args.config_command
    flags = given_on_command_line(_parser, argv)
    file = None if toml is None else ConfigFile(Path("kayit.toml"), tomllib.loads(toml))
    leaf = commands(parser)[command]
    return {s.key: s for s in resolve(leaf, command, flags, environ or {}, file, cwd)}


def _run(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@settings(max_examples=40)  # eight shapes, each built as main builds it
@given(
    flag=st.none() | st.integers(1, 10**6),
    env=st.none() | st.integers(1, 10**6),
    file=st.none() | st.integers(1, 10**6),
)
def test_a_flag_wins_over_the_environment_which_wins_over_the_file(
    flag: int | None, env: int | None, file: int | None
) -> None:
    argv = ["node"] + ([] if flag is None else ["--max-clients", str(flag)])
    environ = {} if env is None else {"KAYIT_MAX_CLIENTS": str(env)}
    toml = "" if file is None else f"[node]\nmax-clients = {file}\n"
    setting = _settle(argv, environ, toml)["max-clients"]
    layers = [(flag, Source.FLAG), (env, Source.ENV), (file, Source.FILE), (10_000, Source.DEFAULT)]
    value, source = next((v, s) for v, s in layers if v is not None)
    assert (setting.value, setting.source) == (value, source)


@settings(max_examples=40)
@given(
    layers=st.lists(st.sampled_from(["flag", "env", "file", "conf"]), unique=True),
    command=st.sampled_from(["node", "cluster"]),
)
def test_tolerance_conf_comes_after_kayit_toml(layers: list[str], command: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        cwd = Path(directory)
        if "conf" in layers:
            (cwd / TOLERANCE_FILE).write_text("TOLERANCE=4\n")
        argv = [command] + (["--tolerance", "1"] if "flag" in layers else [])
        environ = {"KAYIT_TOLERANCE": "2"} if "env" in layers else {}
        toml = f"[{command}]\ntolerance = 3\n" if "file" in layers else ""
        setting = _settle(argv, environ, toml, cwd)["tolerance"]
    expected = [(1, "flag"), (2, "env"), (3, "file"), (4, "conf")]
    value, layer = next(((v, n) for v, n in expected if n in layers), (2, "default"))
    assert setting.value == value
    assert setting.origin == {
        "flag": "--tolerance", "env": "KAYIT_TOLERANCE", "file": "kayit.toml",
        "conf": TOLERANCE_FILE, "default": "",
    }[layer]  # fmt: skip


def test_a_tolerance_conf_not_needed_is_not_read(tmp_path: Path) -> None:
    (tmp_path / TOLERANCE_FILE).write_text("TOLERANCE=many\n")
    assert _settle(["node"], {}, "[node]\ntolerance = 1\n", tmp_path)["tolerance"].value == 1
    with pytest.raises(Exception, match=TOLERANCE_FILE):
        _settle(["node"], {}, None, tmp_path)


def test_every_flag_of_node_and_cluster_has_its_key_and_variable() -> None:
    parser = _parser()
    for command in ("node", "cluster"):
        leaf = commands(parser)[command]
        keys = settable(leaf)
        longs = {
            next(o for o in action.option_strings if o.startswith("--"))[2:]
            for action in leaf._actions
            if action.option_strings and action.dest not in ("help", "config", "no_config")
        }
        assert set(keys) == longs
    assert "max-clients" in settable(commands(parser)["node"])
    assert env_name("max-clients") == "KAYIT_MAX_CLIENTS"
    assert env_name("io-mode") == "KAYIT_IO_MODE"
    # A flag with a short name too: its key is the long one, not the attribute it sets.
    assert settable(commands(parser)["bench"])["pass"].dest == "password"


def test_a_new_flag_gets_a_key_and_a_variable_without_more_code() -> None:
    parser = _parser()
    node = commands(parser)["node"]
    node.add_argument("--brand-new", type=int, default=7)
    file = ConfigFile(Path("k.toml"), {"node": {"brand-new": 8}})
    by_file = {s.key: s for s in resolve(node, "node", {}, {}, file, Path("/"))}
    assert by_file["brand-new"].value == 8
    env = {"KAYIT_BRAND_NEW": "9"}
    by_env = {s.key: s for s in resolve(node, "node", {}, env, file, Path("/"))}
    assert (by_env["brand-new"].value, by_env["brand-new"].source) == (9, Source.ENV)


def test_values_go_through_the_flags_own_types() -> None:
    toml = (
        "[node]\ndata-dir = 'd'\nfsync = 'always'\npeers = ['a:1', 'b:2']\ntimeout = 1\n"
        "insecure = true\n"
    )
    settings = _settle(["node"], {}, toml)
    assert settings["data-dir"].value == Path("d")
    assert settings["fsync"].value == "always"
    assert settings["peers"].value == ["a:1", "b:2"]
    assert settings["timeout"].value == 1.0
    assert settings["insecure"].value is True
    # A flag whose own name starts with no-: true is the flag given.
    assert _settle(["cluster"], {}, "[cluster]\nno-tls = true\n")["no-tls"].value is True
    assert _settle(["bench"], {"KAYIT_NO_PROGRESS": "1"})["no-progress"].value is True
    bench = _settle(["bench"], {"KAYIT_HOST": "a,b", "KAYIT_PORT": "7000"})
    assert bench["host"].value == ["a", "b"]
    assert bench["port"].value == [7000]


@pytest.mark.parametrize(
    ("text", "on"), [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False),
                     ("false", False), ("no", False), ("Off", False)],
)  # fmt: skip
def test_a_flag_without_a_value_from_the_environment(text: str, on: bool) -> None:
    assert _settle(["node"], {"KAYIT_INSECURE": text})["insecure"].value is on


def test_flags_of_other_kinds_take_their_values_too() -> None:
    """Kinds no command has yet: a --flag/--no-flag, a repeated flag, several arguments."""
    parser = _parser()
    node = commands(parser)["node"]
    node.add_argument("--colour", action=argparse.BooleanOptionalAction, default=True)
    node.add_argument("--tag", action="append", type=int)
    node.add_argument("--pair", nargs=2, type=int)
    file = ConfigFile(Path("k.toml"), {"node": {"colour": False, "tag": [1, 2], "pair": [3, 4]}})
    settings = {s.key: s.value for s in resolve(node, "node", {}, {}, file, Path("/"))}
    assert (settings["colour"], settings["tag"], settings["pair"]) == (False, [1, 2], [3, 4])
    environ = {"KAYIT_COLOUR": "0", "KAYIT_TAG": "5"}
    settings = {s.key: s.value for s in resolve(node, "node", {}, environ, None, Path("/"))}
    assert (settings["colour"], settings["tag"]) == (False, [5])


def test_an_empty_variable_counts_as_unset() -> None:
    setting = _settle(["node"], {"KAYIT_MAX_CLIENTS": ""})["max-clients"]
    assert setting.source is Source.DEFAULT


def test_a_flag_wins_over_the_other_flags_of_its_group_from_lesser_sources() -> None:
    """--requirepass on the command line, requirepass-file in the file: the flag's password
    is the one, as if the file did not say it (argparse takes only one of them)."""
    toml = "[node]\nrequirepass-file = 'pw'\njoin = 'a:1'\n"
    settings = _settle(["node", "--requirepass", "x", "--leader"], {}, toml)
    assert settings["requirepass"].value == "x"
    assert settings["requirepass-file"].value is None
    assert settings["requirepass-file"].source is Source.DEFAULT
    assert "yields to requirepass" in settings["requirepass-file"].origin
    assert settings["join"].value is None
    # ... and a variable over the file; a file's `false` sets nothing to yield to.
    settings = _settle(["node"], {"KAYIT_LEADER": "1"}, "[node]\njoin = 'a:1'\n")
    assert (settings["leader"].value, settings["join"].value) == (True, None)
    settings = _settle(["node"], {}, "[node]\nleader = false\njoin = 'a:1'\n")
    assert settings["join"].value == ["a:1"]


@pytest.mark.parametrize(
    ("toml", "environ", "line"),
    [
        ("[node]\nmax-clients = 0\n", {}, "kayit.toml: [node] max-clients: must be at least 1"),
        ("[node]\nmax-clients = 'lots'\n", {}, "kayit.toml: [node] max-clients: not a whole"),
        ("[node]\nmax_clients = 5\n", {}, "kayit.toml: [node] max_clients: unknown key; write "
         "max-clients, as the flag --max-clients"),
        ("[node]\nmax-client = 5\n", {}, "kayit.toml: [node] max-client: unknown key (did you "
         "mean max-clients?)"),
        ("[cluster]\nmembers = 1\n[nodes]\n", {}, "kayit.toml: [nodes]: no such command"),
        ("max-clients = 5\n", {}, "kayit.toml: max-clients: a key belongs in the table"),
        ("[node]\nfsync = 'sometimes'\n", {}, "kayit.toml: [node] fsync: invalid choice"),
        ("[node]\ninsecure = 'yes'\n", {}, "kayit.toml: [node] insecure: expected true or false"),
        ("[node]\ntimeout = true\n", {}, "kayit.toml: [node] timeout: expected a value"),
        ("[node]\ntolerance = 65\n", {}, "kayit.toml: [node] tolerance: must be between 0 and 64"),
        ("[node]\nleader = true\njoin = 'a:1'\n", {}, "kayit.toml: [node] leader and join: only "
         "one of them may be set"),
        ("[node]\nfsync =\n", {}, "kayit.toml: Invalid value (at line 2, column 8)"),
        ("node = 3\n", {}, "kayit.toml: node: must be a table, [node]"),
        ("", {"KAYIT_MAX_CLIENTS": "-3"}, "KAYIT_MAX_CLIENTS: must be at least 1"),
        ("", {"KAYIT_INSECURE": "maybe"}, "KAYIT_INSECURE: expected 1 or 0"),
        ("", {"KAYIT_LEADER": "1", "KAYIT_JOIN": "a:1"}, "KAYIT_LEADER and KAYIT_JOIN: only one"),
        # A mistake in another command's table stops every command: the file is wrong.
        ("[cluster]\nmemberz = 2\n", {}, "kayit.toml: [cluster] memberz: unknown key"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_where_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    toml: str, environ: dict[str, str], line: str,
) -> None:  # fmt: skip
    (tmp_path / "kayit.toml").write_text(toml)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    # The node would start if the settings were good; they are not, so it never does.
    for argv in (["node", "--grpc-port", "1"], ["config", "node"], ["config"]):
        code, out, err = _run(argv, tmp_path, monkeypatch, capsys)
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1 and err.startswith(f"kayit: {line}"), (argv, err)


def test_config_names_a_file_that_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["node", "--config", "elsewhere.toml"], tmp_path, monkeypatch, capsys)
    assert (code, err) == (2, "kayit: elsewhere.toml: no such file\n")
    monkeypatch.setenv("KAYIT_CONFIG", "there.toml")
    code, _, err = _run(["config", "node"], tmp_path, monkeypatch, capsys)
    assert (code, err) == (2, "kayit: there.toml: no such file\n")


def _rows(out: str) -> dict[str, str]:
    """`kayit config` lines by key: 'value  # source'."""
    rows = {}
    for line in out.splitlines():
        if " = " in line and not line.startswith("#"):
            key, rest = line.split(" = ", 1)
            rows[key] = " ".join(rest.split())
    return rows


def test_kayit_config_prints_each_value_and_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kayit.toml").write_text(
        "[node]\nmax-clients = 100\ntimeout = 5\nrequirepass = 'hunter2'\n[cluster]\nmembers = 2\n"
    )
    (tmp_path / TOLERANCE_FILE).write_text("TOLERANCE=3\n")
    monkeypatch.setenv("KAYIT_TIMEOUT", "7")
    argv = ["config", "node", "--max-clients", "5"]
    code, out, err = _run(argv, tmp_path, monkeypatch, capsys)
    assert (code, err) == (0, "")
    assert out.startswith("# kayit.toml: kayit.toml\n\n[node]\n")
    rows = _rows(out)
    assert rows["max-clients"] == "5 # flag (--max-clients)"
    assert rows["timeout"] == "7.0 # env (KAYIT_TIMEOUT)"
    assert rows["tolerance"] == "3 # file (tolerance.conf)"
    assert rows["requirepass"] == '"(hidden)" # file (kayit.toml)'
    assert rows["fsync"] == '"everysec" # default'
    assert "hunter2" not in out
    assert "# grpc-port (not set)" in out
    assert "[cluster]" not in out

    code, out, _ = _run(["config"], tmp_path, monkeypatch, capsys)
    assert code == 0
    tables = [line for line in out.splitlines() if line.startswith("[")]
    assert tables[:2] == ["[node]", "[cluster]"]
    assert "[member.remove]" in tables and "[config]" not in tables
    assert "[certs.init]" not in tables  # nothing to set
    assert "members = 2" in out

    code, out, _ = _run(["config", "--no-config", "node"], tmp_path, monkeypatch, capsys)
    assert code == 0 and out.startswith("# no kayit.toml and no KAYIT_* variable read")
    rows = _rows(out)
    assert rows["timeout"] == "0.0 # default"
    assert rows["tolerance"] == "3 # file (tolerance.conf)"  # the course's file stays


def test_kayit_config_of_a_group_and_of_nothing_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(["config", "member"], tmp_path, monkeypatch, capsys)
    assert code == 0 and "[member.remove]" in out
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, as for `kayit nodes`
        _run(["config", "nodes"], tmp_path, monkeypatch, capsys)
    assert exited.value.code == 2


def test_no_config_reads_neither_the_file_nor_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kayit.toml").write_text("[node]\nmax-clients = 'broken'\n")
    monkeypatch.setenv("KAYIT_TIMEOUT", "broken too")
    code, out, _ = _run(["config", "node", "--no-config"], tmp_path, monkeypatch, capsys)
    assert code == 0
    assert _rows(out)["max-clients"] == "10000 # default"


def test_the_nodes_of_kayit_cluster_read_only_their_command_line() -> None:
    from kayit.local_cluster import ClusterPlan

    plan = ClusterPlan(members=2, tolerance=1, client_port=7000, grpc_port=8000,
                       data_dir=Path("d"), fsync="always", report_every=1.0)  # fmt: skip
    for _, argv in plan.node_commands():
        assert "--no-config" in argv
        # ... which the node's parser takes.
        args = _parser().parse_args(["node", *argv])
        assert isinstance(args, argparse.Namespace) and args.no_config


def test_the_readme_example_is_a_valid_kayit_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "kayit.toml").write_text(example)
    code, out, err = _run(["config"], tmp_path, monkeypatch, capsys)
    assert (code, err) == (0, "")
    assert _rows(out)["via"] == '["127.0.0.1:5555"] # file (kayit.toml)'


@pytest.mark.parametrize(
    ("argv", "environ", "level"),
    [
        (["node"], {}, "info"),
        (["node", "-q"], {}, "warning"),
        (["node", "--log-level", "debug"], {}, "debug"),
        (["node"], {"KAYIT_LOG_LEVEL": "error"}, "error"),
    ],
)
def test_flags_that_share_a_value_are_one_setting(
    argv: list[str], environ: dict[str, str], level: str
) -> None:
    """-q is --log-level warning: the setting of neither, its default nothing, may not
    undo the other's."""
    args = argparse.Namespace()
    apply(list(_settle(argv, environ).values()), args)
    assert args.log_level == level


@pytest.mark.parametrize("argv", [["status"], ["client"], ["status", "--json"]])
def test_a_positional_left_out_is_no_setting_and_no_error(argv: list[str]) -> None:
    """``kayit status`` with no address: its default, not a flag given, and never an error."""
    given = given_on_command_line(_parser, argv)
    assert "address" not in given or given["address"] == _parser().parse_args(argv).address
    assert _parser().parse_args(argv).run is not None
