"""RESP on the client port: framing of arrays, command parsing, reply encoding."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from kayit.protocol import GetCommand, InvalidCommand, SetCommand
from kayit.protocol.commands import AuthCommand, InvalidAuth, KeyQuery
from kayit.protocol.framing import BrokenResp, OverlongLine, RequestFramer, RespArray
from kayit.protocol.resp import (
    Hello,
    Scan,
    ServerCommand,
    bulk,
    error,
    integer,
    mapping,
    null,
    parse_hello,
    parse_resp_command,
    parse_scan,
)


def encode(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def test_one_array() -> None:
    assert RequestFramer(100).feed(encode(b"SET", b"k", b"v")) == [RespArray([b"SET", b"k", b"v"])]


def test_bulk_strings_may_hold_newlines_and_any_byte() -> None:
    value = b"a\r\nb\nc\x00\xff"
    assert RequestFramer(100).feed(encode(b"SET", b"k", value)) == [
        RespArray([b"SET", b"k", value])
    ]


def test_text_lines_and_arrays_mix_on_one_connection() -> None:
    framer = RequestFramer(100)
    data = b"GET 1\n" + encode(b"PING") + b"SET 2 x\r\n" + encode(b"GET", b"2")
    assert framer.feed(data) == [
        b"GET 1",
        RespArray([b"PING"]),
        b"SET 2 x",
        RespArray([b"GET", b"2"]),
    ]


@given(
    st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
)
def test_any_split_of_arrays_gives_the_same_requests(
    commands: list[list[bytes]], cuts: list[int]
) -> None:
    data = b"".join(encode(*args) for args in commands)
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    framer = RequestFramer(1000)
    out = []
    for start, end in pairwise(points):
        out += framer.feed(data[start:end])
    assert out == [RespArray(args) for args in commands]
    assert framer.pending_bytes == 0


@given(
    st.lists(
        st.one_of(
            st.lists(st.binary(max_size=40), max_size=4).map(lambda args: encode(*args)),
            st.binary(max_size=40).map(lambda line: line.replace(b"\n", b"").lstrip(b"*") + b"\n"),
        ),
        max_size=8,
    ),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=20),
)
def test_text_lines_and_arrays_mixed_give_the_same_requests_however_split(
    requests: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(requests)
    whole = RequestFramer(1000).feed(data)
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    framer = RequestFramer(1000)
    out = []
    for start, end in pairwise(points):
        out += framer.feed(data[start:end])
    assert out == whole
    assert len(whole) == sum(1 for r in requests if r != b"*0\r\n")
    assert framer.pending_bytes == 0


def test_an_array_sent_a_byte_at_a_time_keeps_only_its_unfinished_element_buffered() -> None:
    """Measured before: every byte parsed the array again from its start, and a 7 KB array
    of 1024 elements sent a byte at a time held the node's event loop for 4.7 s."""
    args = [b"x" * 5] * 1024
    data = encode(*args)
    framer = RequestFramer(100_000)
    out = []
    most = 0
    for index in range(len(data)):
        out += framer.feed(data[index : index + 1])
        most = max(most, framer.pending_bytes)
    assert out == [RespArray(args)]
    # The elements taken, and one more short of its last byte: no framing bytes are kept for
    # parsing again (before: the whole array so far, 11,270 bytes).
    assert most <= 5 * (len(args) - 1) + len(b"$5\r\nxxxxx\r")


def test_malformed_resp_is_reported_once_and_framing_stops() -> None:
    framer = RequestFramer(100)
    assert framer.feed(b"*1\r\n+PING\r\nGET 1\n") == [BrokenResp("expected '$', got '+'")]
    assert framer.feed(b"GET 2\n") == []


def test_bad_lengths_are_broken_resp() -> None:
    for data in [b"*x\r\n", b"*-1\r\n", b"*1\r\n$abc\r\n", b"*1\r\n$3\r\nabcd\r\n", b"*99999\r\n"]:
        (only,) = RequestFramer(100).feed(data)
        assert isinstance(only, BrokenResp), data


def test_resp_bigger_than_the_limit_is_refused_before_it_is_buffered() -> None:
    framer = RequestFramer(1000)
    (only,) = framer.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n")
    assert isinstance(only, BrokenResp)
    assert framer.pending_bytes == 0


def test_an_incomplete_header_waits_and_a_runaway_one_is_refused() -> None:
    framer = RequestFramer(100)
    assert framer.feed(b"*1\r\n$4") == []
    assert framer.feed(b"\r\nPING\r\n") == [RespArray([b"PING"])]
    (only,) = RequestFramer(100).feed(b"*" + b"1" * 40)
    assert isinstance(only, BrokenResp)


def test_a_text_line_over_the_limit_still_works_after_resp() -> None:
    framer = RequestFramer(10)
    out = framer.feed(encode(b"PING") + b"x" * 20 + b"\nGET 1\n")
    assert out == [RespArray([b"PING"]), OverlongLine(10), b"GET 1"]


def test_set_and_get_become_the_same_commands_as_text() -> None:
    assert parse_resp_command([b"set", b"key:000001234", b"v w"]) == SetCommand(
        "key:000001234", b"v w"
    )
    assert parse_resp_command([b"GET", b"42"]) == GetCommand("42")


def test_bad_resp_commands_are_invalid() -> None:
    for args in [
        [b"SET", b"k"],
        [b"SET", b"k", b"v", b"EX", b"10"],
        [b"SET", b"a b", b"v"],
        [b"SET", b"\xff", b"v"],
        [b"SET", b"k", b""],
        [b"GET"],
        [b"GET", b"x" * 201],
        [b"FLUSHALL"],
        [b"ECHO"],
        [b"PING", b"a", b"b"],
    ]:
        assert isinstance(parse_resp_command(args), InvalidCommand), args


def test_server_commands() -> None:
    assert parse_resp_command([b"ping"]) == ServerCommand("PING", [])
    assert parse_resp_command([b"COMMAND", b"DOCS"]) == ServerCommand("COMMAND", [b"DOCS"])
    assert parse_resp_command([b"config", b"get", b"save"]) == ServerCommand(
        "CONFIG", [b"get", b"save"]
    )


def test_reply_encoding() -> None:
    assert bulk(b"hi\r\n") == b"$4\r\nhi\r\n\r\n"
    assert bulk(None) == b"$-1\r\n"
    assert integer(7) == b":7\r\n"
    assert error("bad\r\nthing") == b"-ERR bad thing\r\n"


def test_auth_with_a_password_or_a_user_and_a_password() -> None:
    assert parse_resp_command([b"AUTH", b"p w"]) == AuthCommand(b"p w")
    assert parse_resp_command([b"auth", b"default", b"pw"]) == AuthCommand(b"pw", b"default")


def test_malformed_auth_is_answered_as_redis_does() -> None:
    none = parse_resp_command([b"AUTH"])
    assert isinstance(none, InvalidAuth)
    assert none.reason == "wrong number of arguments for 'auth' command"
    assert parse_resp_command([b"AUTH", b"a", b"b", b"c"]) == InvalidAuth("syntax error")


def test_hello_options() -> None:
    assert parse_hello([]) == Hello(None)
    assert parse_hello([b"2"]) == Hello(None, 2)
    assert parse_hello([b"3", b"auth", b"default", b"pw", b"SETNAME", b"me"]) == Hello(
        AuthCommand(b"pw", b"default"), 3, b"me"
    )
    assert parse_hello([b"2", b"SETNAME", b"me"]) == Hello(None, 2, b"me")


def test_hello_refuses_another_protocol_before_a_bad_option() -> None:
    assert parse_hello([b"4", b"AUTH", b"default", b"pw"]) == error(
        "unsupported protocol version", kind="NOPROTO"
    )
    bogus = parse_hello([b"1", b"BOGUS"])
    assert isinstance(bogus, bytes) and bogus.startswith(b"-NOPROTO ")
    assert parse_hello([b"x"]) == error("Protocol version is not an integer or out of range")
    assert parse_hello([b"2", b"AUTH", b"default"]) == error("Syntax error in HELLO option 'AUTH'")
    assert parse_hello([b"3", b"BOGUS"]) == error("Syntax error in HELLO option 'BOGUS'")


def test_reads_of_several_ids_are_key_queries() -> None:
    assert parse_resp_command([b"mget", b"a", b"b"]) == KeyQuery("MGET", ("a", "b"))
    assert parse_resp_command([b"EXISTS", b"a", b"a"]) == KeyQuery("EXISTS", ("a", "a"))
    assert parse_resp_command([b"STRLEN", b"a"]) == KeyQuery("STRLEN", ("a",))
    assert parse_resp_command([b"type", b"a"]) == KeyQuery("TYPE", ("a",))
    assert parse_resp_command([b"DEL", b"a", b"b"]) == KeyQuery("DEL", ("a", "b"))
    assert parse_resp_command([b"unlink", b"a"]) == KeyQuery("DEL", ("a",))
    assert parse_resp_command([b"UNLINK"]) == InvalidCommand(
        "wrong number of arguments for 'unlink' command"
    )
    for args in [[b"MGET"], [b"STRLEN", b"a", b"b"], [b"TYPE"], [b"EXISTS", b"a", b"b c"]]:
        assert isinstance(parse_resp_command(args), InvalidCommand), args


def test_scan_options_as_redis_reads_them() -> None:
    assert parse_scan([b"0"]) == Scan(0)
    assert parse_scan([b"17", b"match", b"k*", b"COUNT", b"100", b"TYPE", b"hash"]) == Scan(
        17, b"k*", 100, strings=False
    )
    assert parse_scan([b"5", b"MATCH", b"*"]) == Scan(5)  # every id, as no MATCH
    assert parse_scan([str(2**64 - 1).encode()]) == Scan(2**64 - 1)
    for args, reason in [
        ([b"-1"], "invalid cursor"),
        ([str(2**64).encode()], "invalid cursor"),
        ([b"x"], "invalid cursor"),
        ([b"0", b"COUNT", b"0"], "syntax error"),
        ([b"0", b"COUNT", b"ten"], "value is not an integer or out of range"),
        ([b"0", b"MATCH"], "syntax error"),
        ([b"0", b"LIMIT", b"3"], "syntax error"),
    ]:
        assert parse_scan(args) == error(reason), args


def test_resp3_replies() -> None:
    assert null(2) == b"$-1\r\n" and null(3) == b"_\r\n"
    pairs = [(b"proto", integer(3))]
    assert mapping(pairs, 3) == b"%1\r\n$5\r\nproto\r\n:3\r\n"
    assert mapping(pairs, 2) == b"*2\r\n$5\r\nproto\r\n:3\r\n"
