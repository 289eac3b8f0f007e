"""Where each setting of a command comes from, decided here and nowhere else.

A setting's value is, in this order: its flag on the command line; else its environment
variable; else its key in kayit.toml; else, for TOLERANCE of ``kayit node`` and ``kayit
cluster``, tolerance.conf; else the flag's default. Keys and variables are derived from the
argparse definitions: the flag ``--max-clients`` of ``kayit node`` is the key ``max-clients``
of the table ``[node]``, and the variable ``KAYIT_MAX_CLIENTS``. A flag added to a command
gets both without more code. Values from the environment and the file go through the flag's
own argparse type and choices, so they are checked exactly as the flag is.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kayit.config import TOLERANCE_FILE, ConfigError, read_tolerance

CONFIG_FILE = "kayit.toml"
ENV_PREFIX = "KAYIT_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
# The commands whose TOLERANCE falls back on tolerance.conf in the working directory.
TOLERANCE_CONF_COMMANDS = frozenset({"node", "cluster"})
_TOLERANCE_KEY = "tolerance"
# The flags that say where configuration comes from: not settings themselves.
_CONFIG_DESTS = frozenset({"config", "no_config"})
# The namespace attribute naming the command that runs ("member.remove"); see add_config_flags.
COMMAND_ATTRIBUTE = "config_command"
_SECRET_METAVARS = frozenset({"PASSWORD"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Source(enum.StrEnum):
    """Where a value came from, the one that wins first."""

    FLAG = "flag"
    ENV = "env"
    FILE = "file"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # the flag's name without its dashes: max-clients
    dest: str  # the argparse attribute it sets
    value: object
    source: Source
    origin: str  # which flag, variable or file gave it; what it yielded to, for a default
    secret: bool = False  # a password: never printed


@dataclass(frozen=True, slots=True)
class ConfigFile:
    path: Path  # as found or given: errors name it so
    tables: dict[str, Any]


def key_of(action: argparse.Action) -> str | None:
    """The key of a flag: its first long option without the dashes. None for what is not a
    setting: positional arguments, --help, --config, a flag without a default value, and one
    argparse requires on the command line (it refuses the command line before any file is
    read)."""
    if action.dest in _CONFIG_DESTS or action.required or action.default == argparse.SUPPRESS:
        return None
    if isinstance(action, argparse._HelpAction | argparse._VersionAction):
        return None
    long = [option for option in action.option_strings if option.startswith("--")]
    return long[0][2:] if long else None


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper().replace("-", "_")


def settable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The flags of one command that have a key, by key, in the order of --help."""
    keyed = ((key_of(action), action) for action in parser._actions)
    return {key: action for key, action in keyed if key is not None}


def commands(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command that runs (not one that only groups others: ``member``), by its table
    name: ``node``, ``member.remove``."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            found[path] = parser
        for group in groups:
            seen: set[int] = set()  # aliases name one parser twice
            for name, sub in group.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    walk(sub, f"{path}.{name}" if path else name)

    walk(root, "")
    return found


def add_config_flags(root: argparse.ArgumentParser, skip: frozenset[str]) -> None:
    """Give every command but ``skip`` --config and --no-config, the name of its table, and a
    --help note on where else its flags may be set."""
    for path, parser in commands(root).items():
        if path in skip or not settable(parser):  # nothing to set: kayit certs
            continue
        add_file_flags(parser)
        parser.set_defaults(**{COMMAND_ATTRIBUTE: path})
        example = next(iter(settable(parser)))
        note = (
            f"Every --flag may also be set by its environment variable (--{example}: "
            f"{env_name(example)}) or by its key in the [{path}] table of {CONFIG_FILE} "
            f"({example} = ...; true or false for a flag without a value). A flag wins over "
            f"the environment, which wins over the file. 'kayit config {path.replace('.', ' ')}' "
            "prints every value and where it comes from."
        )
        parser.epilog = f"{parser.epilog} {note}" if parser.epilog else note


def add_file_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, metavar="FILE",
        help=f"read settings from FILE ({CONFIG_ENV}, else ./{CONFIG_FILE} if there is one)",
    )  # fmt: skip
    where.add_argument(
        "--no-config", action="store_true",
        help=f"read no {CONFIG_FILE} and no KAYIT_* variable: flags and defaults only",
    )  # fmt: skip


def given_on_command_line(make_parser: Callable[[], argparse.ArgumentParser],
                          argv: list[str]) -> dict[str, object]:  # fmt: skip
    """The settings the command line gives, by dest: a second parse in which no flag has a
    default, so that what is there was given."""
    parser = make_parser()
    for command in commands(parser).values():
        for action in command._actions:
            # Positionals have no setting; one left out (nargs="?") would have its type
            # applied to the SUPPRESS marker.
            if action.option_strings:
                action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def find_file(args: argparse.Namespace, environ: Mapping[str, str], cwd: Path) -> ConfigFile | None:
    """kayit.toml: --config, else KAYIT_CONFIG, else the working directory's if there is one;
    none with --no-config."""
    if getattr(args, "no_config", False):
        return None
    given: Path | None = getattr(args, "config", None)
    if given is None and environ.get(CONFIG_ENV):
        given = Path(environ[CONFIG_ENV])
    path = given if given is not None else Path(CONFIG_FILE)
    full = path if path.is_absolute() else cwd / path
    try:
        with full.open("rb") as file:
            tables = tomllib.load(file)
    except FileNotFoundError:
        if given is None:
            return None
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    return ConfigFile(path, tables)


def check_tables(file: ConfigFile, known: Mapping[str, argparse.ArgumentParser]) -> None:
    """Refuse a key or table the commands do not have, wherever it is in the file."""

    def walk(table: dict[str, Any], prefix: str) -> None:
        for name, value in table.items():
            path = f"{prefix}.{name}" if prefix else name
            if path in known:
                if not isinstance(value, dict):
                    raise ConfigError(f"{file.path}: {path}: must be a table, [{path}]")
                keys = settable(known[path])
                for key in value:
                    if key not in keys:
                        raise ConfigError(f"{file.path}: [{path}] {key}: {_unknown(key, keys)}")
            elif isinstance(value, dict) and any(c.startswith(f"{path}.") for c in known):
                walk(value, path)
            elif not prefix and not isinstance(value, dict):
                raise ConfigError(
                    f"{file.path}: {name}: a key belongs in the table of its command, such "
                    "as [node]"
                )
            else:
                tables = ", ".join(f"[{c}]" for c in known)
                raise ConfigError(f"{file.path}: [{path}]: no such command; tables: {tables}")

    walk(file.tables, "")


def _unknown(key: str, keys: Mapping[str, argparse.Action]) -> str:
    dashed = key.replace("_", "-")
    if dashed in keys:
        return f"unknown key; write {dashed}, as the flag --{dashed}"
    close = difflib.get_close_matches(key, list(keys), n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


def _table(file: ConfigFile | None, command: str) -> dict[str, Any]:
    table: Any = file.tables if file is not None else {}
    for part in command.split("."):
        table = table.get(part, {}) if isinstance(table, dict) else {}
    return table if isinstance(table, dict) else {}


def resolve(
    parser: argparse.ArgumentParser,
    command: str,
    flags: Mapping[str, object],
    environ: Mapping[str, str],
    file: ConfigFile | None,
    cwd: Path,
) -> list[Setting]:
    """The settings of ``command`` (its ``parser``), given the values its command line gave
    (``flags``, by dest); ``environ`` is empty with --no-config."""
    table = _table(file, command)
    settings: dict[str, Setting] = {}
    for key, action in settable(parser).items():
        secret = action.metavar in _SECRET_METAVARS
        if action.dest in flags:
            value = flags[action.dest]
            settings[key] = Setting(key, action.dest, value, Source.FLAG, f"--{key}", secret)
        elif environ.get(env_name(key)):
            name = env_name(key)
            value = _convert(parser, action, environ[name], name, environ=True)
            settings[key] = Setting(key, action.dest, value, Source.ENV, name, secret)
        elif key in table:
            origin = str(file.path if file else CONFIG_FILE)
            value = _convert(
                parser, action, table[key], f"{origin}: [{command}] {key}", environ=False
            )
            settings[key] = Setting(key, action.dest, value, Source.FILE, origin, secret)
        elif (
            key == _TOLERANCE_KEY
            and command in TOLERANCE_CONF_COMMANDS
            and (tolerance := read_tolerance(cwd)) is not None
        ):
            settings[key] = Setting(key, action.dest, tolerance, Source.FILE, TOLERANCE_FILE)
        else:
            value = _default(parser, action)
            settings[key] = Setting(key, action.dest, value, Source.DEFAULT, "", secret)
    _settle_exclusive_groups(parser, command, settings)
    return list(settings.values())


def _settle_exclusive_groups(
    parser: argparse.ArgumentParser, command: str, settings: dict[str, Setting]
) -> None:
    """Flags argparse takes only one of (--leader or --join) are one setting: the source
    that wins gives it, and what a lesser source set of the others is dropped. Two of them
    from the same source are refused, as argparse refuses them on one command line."""
    rank = list(Source)
    by_dest = {setting.dest: setting for setting in settings.values()}
    for group in parser._mutually_exclusive_groups:
        members = [by_dest[a.dest] for a in group._group_actions if a.dest in by_dest]
        set_ = [
            s for s in members
            if s.source is not Source.DEFAULT and s.value != _default(parser, _action(parser, s))
        ]  # fmt: skip
        if not set_:
            continue
        best = min(rank.index(s.source) for s in set_)  # tolerance.conf is in no group
        winners = [s for s in set_ if rank.index(s.source) == best]
        if len(winners) > 1:
            if winners[0].source is Source.FILE:
                keys = " and ".join(s.key for s in winners)
                named = f"{winners[0].origin}: [{command}] {keys}"
            else:  # variables
                named = " and ".join(s.origin for s in winners)
            raise ConfigError(f"{named}: only one of them may be set")
        for loser in set_:
            if loser is not winners[0]:
                value = _default(parser, _action(parser, loser))
                origin = f"{loser.origin} yields to {winners[0].key} ({winners[0].origin})"
                settings[loser.key] = Setting(
                    loser.key, loser.dest, value, Source.DEFAULT, origin, loser.secret
                )


def _action(parser: argparse.ArgumentParser, setting: Setting) -> argparse.Action:
    return settable(parser)[setting.key]


def _default(parser: argparse.ArgumentParser, action: argparse.Action) -> object:
    """The value argparse gives a flag not given: a text default goes through its type."""
    if isinstance(action.default, str):
        return parser._get_value(action, action.default)
    return action.default


def _convert(
    parser: argparse.ArgumentParser, action: argparse.Action, raw: object, where: str,
    *, environ: bool,
) -> object:  # fmt: skip
    """A value from the environment or the file, as the flag would give it."""
    namespace = argparse.Namespace()
    if action.nargs == 0:  # a flag without a value: --insecure
        if isinstance(raw, bool):
            on = raw
        elif environ and isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            on = raw.strip().lower() in _TRUE
        else:
            expected = "1 or 0 (also true/false, yes/no, on/off)" if environ else "true or false"
            raise ConfigError(f"{where}: expected {expected}, not {_shown(raw)}")
        option = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):  # --flag and --no-flag
            option = option if on else f"--no-{option[2:]}"
        elif not on:
            return _default(parser, action)
        action(parser, namespace, [], option)
        return getattr(namespace, action.dest)
    for strings in _arguments(action, raw, where):
        try:
            values = parser._get_values(action, strings)
        except argparse.ArgumentError as error:
            raise ConfigError(f"{where}: {error.message}") from None
        action(parser, namespace, values, action.option_strings[0])
    return getattr(namespace, action.dest)


def _arguments(action: argparse.Action, raw: object, where: str) -> list[list[str]]:
    """A value as the command-line arguments of the flag's occurrences: an array is one
    occurrence with several arguments for a flag that takes several, one occurrence per item
    for a flag that may be repeated, else the comma-separated list the flag takes."""
    if isinstance(raw, bool):
        raise ConfigError(f"{where}: expected a value as the flag takes, not {_shown(raw)}")
    if isinstance(raw, str | int | float):
        return [[str(raw)]]
    if isinstance(raw, list) and all(
        isinstance(item, str | int | float) and not isinstance(item, bool) for item in raw
    ):
        items = [str(item) for item in raw]
        if action.nargs in ("+", "*") or isinstance(action.nargs, int):
            return [items]
        if isinstance(action, argparse._AppendAction):  # and _ExtendAction, its subclass
            return [[item] for item in items]
        return [[",".join(items)]]
    raise ConfigError(f"{where}: expected a string, a number or an array of them")


def _shown(raw: object) -> str:
    return json.dumps(raw) if isinstance(raw, bool | str | int | float) else type(raw).__name__


def apply(settings: list[Setting], args: argparse.Namespace) -> None:
    """Set each setting's value on ``args``. Flags that share a value (``-q`` is
    ``--log-level warning``) are one: the strongest source wins, and a default that is
    nothing never overrides one that is something."""
    rank = list(Source)
    chosen: dict[str, Setting] = {}
    for setting in settings:
        held = chosen.get(setting.dest)
        if held is None or (rank.index(setting.source), setting.value is None) < (
            rank.index(held.source),
            held.value is None,
        ):
            chosen[setting.dest] = setting
    for setting in chosen.values():
        setattr(args, setting.dest, setting.value)


def format_settings(command: str, settings: list[Setting]) -> list[str]:
    """``[command]`` then ``key = value  # source (origin)``, one line a setting, in the
    order of --help; a setting with no value is a comment."""
    rows = [(_assignment(setting), _provenance(setting)) for setting in settings]
    width = max((len(left) for left, _ in rows), default=0)
    return [f"[{command}]", *(f"{left.ljust(width)}  # {right}" for left, right in rows)]


def _assignment(setting: Setting) -> str:
    if setting.value is None:
        return f"# {setting.key} (not set)"
    if setting.secret:
        return f'{setting.key} = "(hidden)"'
    return f"{setting.key} = {_toml(setting.value)}"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


def _provenance(setting: Setting) -> str:
    return f"{setting.source} ({setting.origin})" if setting.origin else str(setting.source)
