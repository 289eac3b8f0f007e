"""parse_command (one client line -> command) and the reply encoders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.protocol.commands import (
    MAX_ID_BYTES,
    AuthCommand,
    GetCommand,
    InvalidAuth,
    InvalidCommand,
    KeyQuery,
    SetCommand,
    parse_command,
    validate_id,
)
from kayit.protocol.errors import ErrorCode, error_code
from kayit.protocol.replies import NOT_FOUND, OK, encode_error, encode_value


def invalid_reason(line: bytes) -> str:
    command = parse_command(line)
    assert isinstance(command, InvalidCommand), command
    return command.reason


# -- SET / GET ---------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [b"SET", b"set", b"Set", b"sEt", b"seT"])
def test_set_is_case_insensitive(verb: bytes) -> None:
    assert parse_command(verb + b" 42 hello") == SetCommand("42", b"hello")


@pytest.mark.parametrize("verb", [b"GET", b"get", b"Get", b"gET"])
def test_get_is_case_insensitive(verb: bytes) -> None:
    assert parse_command(verb + b" 42") == GetCommand("42")


def test_id_case_is_kept() -> None:
    assert parse_command(b"set AbC x") == SetCommand("AbC", b"x")
    assert parse_command(b"get AbC") == GetCommand("AbC")


def test_message_is_the_rest_of_the_line_with_spaces_kept_exactly() -> None:
    assert parse_command(b"SET 1 hello  big   world  ") == SetCommand("1", b"hello  big   world  ")


def test_message_may_start_with_spaces_after_the_one_separator() -> None:
    assert parse_command(b"SET 1   x") == SetCommand("1", b"  x")


def test_message_that_is_only_spaces_is_kept() -> None:
    assert parse_command(b"SET 1  ") == SetCommand("1", b" ")


def test_message_keeps_tabs_cr_and_words_like_commands() -> None:
    assert parse_command(b"SET k \tGET 1\rSET 2 y") == SetCommand("k", b"\tGET 1\rSET 2 y")


def test_message_keeps_multibyte_utf8_bytes() -> None:
    message = "merhaba d\u00fcnya \u20ac \U0001f600".encode()
    assert parse_command(b"SET 7 " + message) == SetCommand("7", message)


def test_set_with_empty_message_is_invalid() -> None:
    assert "message" in invalid_reason(b"SET 1 ")
    assert "message" in invalid_reason(b"SET 1")


@pytest.mark.parametrize("line", [b"SET", b"SET ", b"GET", b"GET ", b"get"])
def test_missing_id(line: bytes) -> None:
    assert invalid_reason(line) == "missing id"


def test_two_spaces_after_set_means_missing_id() -> None:
    assert invalid_reason(b"SET  1 x") == "missing id"


def test_id_with_non_space_whitespace_is_rejected() -> None:
    assert "whitespace" in invalid_reason(b"SET a\tb x")
    assert "whitespace" in invalid_reason(b"GET \ta")
    assert invalid_reason(b"GET a\tb") == "GET takes one id: GET <id>"
    assert "whitespace" in invalid_reason(b"GET  1")


def test_get_with_two_ids() -> None:
    assert invalid_reason(b"GET 1 2") == "GET takes one id: GET <id>"


def test_get_with_trailing_space_is_rejected() -> None:
    assert isinstance(parse_command(b"GET 1 "), InvalidCommand)


@pytest.mark.parametrize("verb", [b"EXISTS", b"exists", b"STRLEN", b"StrLen", b"DEL", b"del"])
def test_exists_strlen_and_del_take_one_id(verb: bytes) -> None:
    name = verb.decode().upper()
    assert parse_command(verb + b" key:1") == KeyQuery(name, ("key:1",))
    assert invalid_reason(verb + b" a b") == f"{name} takes one id: {name} <id>"
    assert invalid_reason(verb) == "missing id"


@pytest.mark.parametrize(
    "key",
    [
        "a" * MAX_ID_BYTES,
        "\u00e9" * (MAX_ID_BYTES // 2),  # 2-byte characters, exactly 200 bytes
        "\u20ac" * 66 + "ab",  # 3-byte characters: 198 + 2 bytes
        "\U0001f600" * 50,  # 4-byte characters: 200 bytes
    ],
)
def test_id_of_exactly_200_bytes_is_accepted(key: str) -> None:
    assert len(key.encode()) == 200
    assert parse_command(f"SET {key} m".encode()) == SetCommand(key, b"m")
    assert parse_command(f"GET {key}".encode()) == GetCommand(key)
    assert validate_id(key) is None


@pytest.mark.parametrize(
    "key",
    [
        "a" * (MAX_ID_BYTES + 1),
        "\u00e9" * 100 + "a",  # 100 characters, 201 bytes
        "\u00e9" * 101,  # 101 characters, 202 bytes
        "\U0001f600" * 50 + "a",  # only 51 characters
    ],
)
def test_id_longer_than_200_bytes_is_rejected(key: str) -> None:
    assert len(key.encode()) > 200
    assert invalid_reason(f"SET {key} m".encode()) == "id longer than 200 bytes"
    assert invalid_reason(f"GET {key}".encode()) == "id longer than 200 bytes"


def test_max_id_bytes_is_200() -> None:
    assert MAX_ID_BYTES == 200


@pytest.mark.parametrize(
    "line", [b"SET 1 \xff", b"SET \xc3 x", b"GET \x80", b"\xfe\xff", b"SET 1 \xed\xa0\x80"]
)
def test_non_utf8_line_is_invalid(line: bytes) -> None:
    assert invalid_reason(line) == "line is not valid UTF-8"


@pytest.mark.parametrize("line", [b"DELETE 1", b"SETX 1 a", b"GETS 1", b"PING", b"\tSET 1 a"])
def test_unknown_command(line: bytes) -> None:
    reason = invalid_reason(line)
    assert reason.startswith("unknown command")
    name = line.decode().partition(" ")[0]
    assert repr(name) in reason


def test_unknown_command_name_is_shortened_in_the_reason() -> None:
    reason = invalid_reason(b"X" * 100 + b" 1")
    assert "X" * 32 + "..." in reason
    assert "X" * 33 not in reason


@pytest.mark.parametrize("line", [b"", b" ", b"   ", b"\t", b" \t "])
def test_empty_line(line: bytes) -> None:
    assert invalid_reason(line).startswith("empty line")


def test_set_without_space_before_id_is_unknown() -> None:
    assert invalid_reason(b"SET1 x").startswith("unknown command")


# -- properties --------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_parse_never_raises_on_arbitrary_bytes(line: bytes) -> None:
    parsed = parse_command(line)
    assert isinstance(parsed, SetCommand | GetCommand | AuthCommand | KeyQuery | InvalidCommand)


@given(st.binary(max_size=60))
def test_parse_never_raises_after_a_verb(tail: bytes) -> None:
    for verb in (b"SET ", b"GET ", b"set", b"get "):
        command = parse_command(verb + tail)
        assert isinstance(command, SetCommand | GetCommand | InvalidCommand)


def _truncate_utf8(text: str, limit: int) -> str:
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


_id_char = st.characters(codec="utf-8").filter(lambda c: not c.isspace())
valid_ids = st.text(_id_char, min_size=1, max_size=200).map(
    lambda text: _truncate_utf8(text, MAX_ID_BYTES)
)
messages = st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1)


@given(key=valid_ids, message=messages)
def test_set_round_trips(key: str, message: str) -> None:
    assert 1 <= len(key.encode()) <= MAX_ID_BYTES
    line = f"SET {key} {message}".encode()
    assert parse_command(line) == SetCommand(key, message.encode())


@given(key=valid_ids)
def test_get_round_trips(key: str) -> None:
    assert parse_command(f"GET {key}".encode()) == GetCommand(key)


@given(key=st.text(_id_char, min_size=51, max_size=120))
def test_set_accepts_an_id_exactly_when_it_fits_200_bytes(key: str) -> None:
    command = parse_command(f"SET {key} m".encode())
    if len(key.encode()) <= MAX_ID_BYTES:
        assert command == SetCommand(key, b"m")
    else:
        assert command == InvalidCommand("id longer than 200 bytes")


# -- replies -----------------------------------------------------------------------------------


def test_fixed_replies() -> None:
    assert OK == b"OK\n"
    assert NOT_FOUND == b"NOT_FOUND\n"


def test_encode_value_appends_one_newline() -> None:
    assert encode_value(b"hello  world ") == b"hello  world \n"
    assert encode_value(b"") == b"\n"


def test_encode_value_with_a_newline_is_a_request_error() -> None:
    assert encode_value(b"two\nlines").startswith(b"ERROR BADREQUEST ")


def test_encode_error_simple() -> None:
    assert encode_error(ErrorCode.BADREQUEST, "missing id") == b"ERROR BADREQUEST missing id\n"


def test_encode_error_flattens_newlines_and_runs_of_whitespace() -> None:
    encoded = encode_error(ErrorCode.NOREPLICAS, "bad\nline\r\n  here\t")
    assert encoded == b"ERROR NOREPLICAS bad line here\n"


def test_encode_error_of_lone_surrogate_does_not_raise() -> None:
    assert encode_error(ErrorCode.INTERNAL, "x\ud800y") == b"ERROR INTERNAL x?y\n"


def test_encode_error_of_invalid_command_reason() -> None:
    reason = invalid_reason(b"FOO\x0b\x0c\x1c 1")
    encoded = encode_error(ErrorCode.BADREQUEST, reason)
    assert encoded.count(b"\n") == 1
    assert encoded.startswith(b"ERROR BADREQUEST unknown command")


@given(st.text())
def test_encode_error_is_always_exactly_one_line(reason: str) -> None:
    encoded = encode_error(ErrorCode.UNAVAILABLE, reason)
    assert encoded.startswith(b"ERROR UNAVAILABLE ")
    assert error_code(encoded) is ErrorCode.UNAVAILABLE
    assert encoded.endswith(b"\n")
    assert encoded.count(b"\n") == 1
    assert b"\r" not in encoded


@given(st.text(st.characters(codec=None, categories=["Cs", "Zl", "Zp", "Cc", "Zs", "Ll"])))
def test_encode_error_one_line_with_separators_and_surrogates(reason: str) -> None:
    encoded = encode_error(ErrorCode.BADREQUEST, reason)
    assert encoded.startswith(b"ERROR BADREQUEST ")
    assert encoded.count(b"\n") == 1
    assert encoded.endswith(b"\n")


@pytest.mark.parametrize(
    ("line", "password"),
    [
        (b"AUTH secret", b"secret"),
        (b"auth secret", b"secret"),
        (b"AUTH two words ", b"two words "),  # the rest of the line, kept exactly
        (b"AUTH default secret", b"default secret"),  # a text line names no user
    ],
)
def test_auth_takes_the_rest_of_the_line(line: bytes, password: bytes) -> None:
    assert parse_command(line) == AuthCommand(password)


def test_auth_without_a_password_is_a_malformed_auth() -> None:
    for line in (b"AUTH", b"AUTH "):
        command = parse_command(line)
        assert isinstance(command, InvalidAuth)
        assert "AUTH <password>" in command.reason


def test_an_auth_command_does_not_show_its_password() -> None:
    assert "hunter2" not in repr(AuthCommand(b"hunter2"))
