"""The pure parts of ``kayit bench``: flag values, keys, percentiles, requests, reply scanning."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.bench.settings import (
    COURSE_BIG_EVERY,
    COURSE_BIG_SIZE,
    BenchSettings,
    Protocol,
    combine_addresses,
    course_settings,
    format_key,
    parse_positive,
    parse_ratio,
    parse_size,
)
from kayit.bench.stats import BenchResult, CommandFigures, latency_of, percentiles
from kayit.bench.wire import (
    GET_KIND,
    SET_KIND,
    CourseRequests,
    RequestPool,
    RespError,
    RespReplies,
    TextReplies,
    count_text_errors,
)
from kayit.cli import main


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` split at the given positions (duplicates give empty chunks)."""
    points = [0, *sorted(min(max(cut, 0), len(data)) for cut in cuts), len(data)]
    return [data[a:b] for a, b in pairwise(points)]


# -- flag values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64", (64, 64)), ("5-2000", (5, 2000)), ("1", (1, 1)), ("7-7", (7, 7)), (" 3-9 ", (3, 9))],
)
def test_size_and_size_ranges(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "x", "0", "-5", "5-", "2000-5", "1.5", "5-20-30", "+5", "5--9", "²", "600000000"]
)
def test_bad_sizes_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text", ["-0.1", "1.01", "nan", "half", ""])
def test_bad_set_ratios_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ratio(text)


def test_set_ratio_ends_are_allowed() -> None:
    assert (parse_ratio("0"), parse_ratio("0.25"), parse_ratio("1")) == (0.0, 0.25, 1.0)


@pytest.mark.parametrize("text", ["0", "-3", "2.5", "many"])
def test_counts_must_be_whole_and_positive(text: str) -> None:
    with pytest.raises(ValueError):
        parse_positive(text)


@pytest.mark.parametrize(
    "args",
    [
        ["-d", "10-5"],
        ["--set-ratio", "2"],
        ["-c", "0"],
        ["-P", "x"],
        ["--protocol", "http"],
        ["-p", "6666,x"],
        ["-p", "6666,70000"],
    ],
)
def test_bad_flags_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["bench", *args])
    assert stop.value.code == 2
    error = capsys.readouterr().err  # one line, saying where the usage is
    assert error.startswith("kayit bench: ") and error.endswith("(see kayit bench --help)\n")
    assert error.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "2"],
        ["-P", "4"],
        ["--set-ratio", "0.5"],
        ["-d", "100"],
        ["--keyspace", "10"],
        ["--protocol", "resp"],
        ["-p", "6666,6667"],
    ],
)
def test_course_takes_no_flag_it_fixes(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--course", *args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("kayit: bench --course ") and error.count("\n") == 1


def test_h_is_the_host_and_help_is_spelled_out(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "-h HOST, --host HOST" in out
    assert "-P PIPELINE, --pipeline PIPELINE" in out


def test_every_host_goes_with_every_port() -> None:
    assert combine_addresses(None, None) == (("127.0.0.1", 6666),)
    assert combine_addresses(None, [6667, 6668]) == (("127.0.0.1", 6667), ("127.0.0.1", 6668))
    assert combine_addresses(["a", "b"], [1, 2]) == (("a", 1), ("a", 2), ("b", 1), ("b", 2))
    settings = BenchSettings(addresses=combine_addresses(["a", "b"], [1]))
    assert (settings.host, settings.port, settings.where(1)) == ("a", 1, "b:1")


def test_keys_are_zero_padded_to_nine_digits() -> None:
    assert format_key(0) == b"key:000000000"
    assert format_key(1234) == b"key:000001234"
    assert format_key(999_999_999) == b"key:999999999"
    assert format_key(1_000_000_000) == b"key:1000000000"


# -- percentiles -------------------------------------------------------------------------------


def test_percentiles_of_one_to_a_hundred() -> None:
    values = [float(n) for n in range(1, 101)]
    random.Random(7).shuffle(values)
    assert percentiles(values, (50, 95, 99, 100)) == [50.0, 95.0, 99.0, 100.0]
    assert percentiles(values, (0, 1, 0.5)) == [1.0, 1.0, 1.0]


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([4.0, 1.0, 3.0, 2.0], (25, 50, 51, 75, 100)) == [1.0, 2.0, 3.0, 3.0, 4.0]
    assert percentiles([9.5] * 3 + [0.5], (50, 99)) == [9.5, 9.5]


def test_latency_of_few_or_no_values() -> None:
    one = latency_of([2.5])
    assert (one.p50, one.p95, one.p99, one.max) == (2.5, 2.5, 2.5, 2.5)
    none = latency_of([])
    assert (none.p50, none.p95, none.p99, none.max) == (0.0, 0.0, 0.0, 0.0)


def test_json_has_exactly_the_documented_shape() -> None:
    settings = BenchSettings(size=(5, 2000), set_ratio=0.5)
    result = BenchResult(
        settings=settings, requests=1000, errors=2, seconds=0.5, latency=latency_of([1.0, 3.0])
    )
    assert result.as_json() == {
        "protocol": "text",
        "host": "127.0.0.1",
        "port": 6666,
        "addresses": ["127.0.0.1:6666"],
        "connections": 50,
        "pipeline": 1,
        "set_ratio": 0.5,
        "size": [5, 2000],
        "keyspace": 100000,
        "requests": 1000,
        "errors": 2,
        "errors_by_kind": {"wrong reply": 2},
        "seconds": 0.5,
        "throughput": 2000.0,
        "latency_ms": {"p50": 1.0, "p95": 3.0, "p99": 3.0, "max": 3.0},
    }


def test_course_json_adds_figures_per_command() -> None:
    settings = course_settings(("127.0.0.1", 6666), 100, None, 1, None, None)
    result = BenchResult(
        settings=settings,
        requests=3,
        errors=1,
        seconds=2.0,
        latency=latency_of([1.0, 2.0, 9.0]),
        commands={
            "set": CommandFigures(1, 0, latency_of([1.0])),
            "get": CommandFigures(1, 0, latency_of([2.0])),
            "big_set": CommandFigures(1, 1, latency_of([9.0])),
        },
        reconnects=1,
    )
    figures = result.as_json()
    assert (figures["connections"], figures["set_ratio"], figures["size"]) == (1, 0.8, [5, 2000])
    assert (figures["keyspace"], figures["course"], figures["reconnects"]) == (10_000, True, 1)
    assert figures["commands"]["big_set"] == {
        "requests": 1,
        "errors": 1,
        "throughput": 0.5,
        "latency_ms": {"p50": 9.0, "p99": 9.0},
    }
    summary = result.summary().splitlines()
    assert summary[6:10] == [
        "  SET         0.5 requests/s  p50 1.000  p99 1.000  (1 requests, 0 errors)",
        "  GET         0.5 requests/s  p50 2.000  p99 2.000  (1 requests, 0 errors)",
        "  big SET     0.5 requests/s  p50 9.000  p99 9.000  (1 requests, 1 errors)",
        "  reconnects  1",
    ]


# -- requests ----------------------------------------------------------------------------------


def test_course_mix_is_the_stress_clients() -> None:
    settings = course_settings(("127.0.0.1", 6666), 100, None, None, None, None)
    requests = CourseRequests(settings, random.Random(5))
    commands = [requests.next() for _ in range(20_000)]
    again = CourseRequests(settings, random.Random(5))
    assert [again.next() for _ in range(20_000)] == commands  # seeded runs repeat
    kinds = [kind for kind, _ in commands]
    big = [n for n, kind in enumerate(kinds, start=1) if kind == "big_set"]
    assert big == list(range(COURSE_BIG_EVERY, 20_001, COURSE_BIG_EVERY))
    sets, gets = kinds.count("set"), kinds.count("get")
    assert 0.78 < sets / (sets + gets) < 0.82
    sizes = set()
    keys = set()
    for kind, line in commands:
        verb, key, *value = line.split(b" ", 2)
        assert key.isdigit() and str(int(key)).encode() == key  # bare, no zero padding
        keys.add(int(key))
        if kind == "get":
            assert (verb, value) == (b"GET", [])
            continue
        assert verb == b"SET" and set(value[0]) == {ord("x")}
        if kind == "big_set":
            assert len(value[0]) == COURSE_BIG_SIZE
        else:
            sizes.add(len(value[0]))
    assert min(keys) < 20 and max(keys) > 9_980 and max(keys) < 10_000
    assert min(sizes) == 5 and max(sizes) == 2000


def parse_resp_requests(data: bytes) -> list[list[bytes]]:
    """A strict parser for arrays of bulk strings (what a client sends)."""
    commands: list[list[bytes]] = []
    position = 0
    while position < len(data):
        head = data.index(b"\r\n", position)
        assert data[position : position + 1] == b"*"
        count = int(data[position + 1 : head])
        position = head + 2
        parts = []
        for _ in range(count):
            head = data.index(b"\r\n", position)
            assert data[position : position + 1] == b"$"
            length = int(data[position + 1 : head])
            parts.append(data[head + 2 : head + 2 + length])
            assert data[head + 2 + length : head + 4 + length] == b"\r\n"
            position = head + 4 + length
        commands.append(parts)
    return commands


def decode_batch(protocol: Protocol, payload: bytes) -> list[list[bytes]]:
    if protocol == "resp":
        return parse_resp_requests(payload)
    assert payload.endswith(b"\n")
    return [line.split(b" ", 2) for line in payload[:-1].split(b"\n")]


@pytest.mark.parametrize("protocol", ["text", "resp"])
@pytest.mark.parametrize(
    ("size", "keyspace"),
    [((64, 64), 100), ((5, 2000), 10), ((1, 300_000), 5), ((3, 3), 2_000_000)],
)
def test_batches_are_well_formed_requests(
    protocol: Protocol, size: tuple[int, int], keyspace: int
) -> None:
    settings = BenchSettings(protocol=protocol, size=size, keyspace=keyspace, set_ratio=0.5)
    pool = RequestPool(settings)
    rng = random.Random(1)
    seen_kinds: set[int] = set()
    for count in (1, 7, 40):
        payload, kinds = pool.batch(rng.random, count)
        commands = decode_batch(protocol, payload)
        assert len(commands) == len(kinds) == count
        for command, kind in zip(commands, kinds, strict=True):
            seen_kinds.add(kind)
            verb, key = command[0], command[1]
            assert key.startswith(b"key:")
            assert 0 <= int(key[4:]) < keyspace
            assert len(key) == max(13, 4 + len(str(keyspace - 1)))
            if kind == SET_KIND:
                assert verb == b"SET"
                assert len(command) == 3
                assert size[0] <= len(command[2]) <= size[1]
                assert set(command[2]) == {ord("x")}
            else:
                assert kind == GET_KIND
                assert (verb, len(command)) == (b"GET", 2)
    assert seen_kinds == {SET_KIND, GET_KIND}


@pytest.mark.parametrize(("ratio", "kinds"), [(1.0, {SET_KIND}), (0.0, {GET_KIND})])
def test_set_ratio_ends_give_one_kind(ratio: float, kinds: set[int]) -> None:
    pool = RequestPool(BenchSettings(set_ratio=ratio))
    _, got = pool.batch(random.Random(3).random, 500)
    assert set(got) == kinds


def test_set_ratio_is_roughly_kept_and_seeded_runs_repeat() -> None:
    pool = RequestPool(BenchSettings(set_ratio=0.3))
    first = pool.batch(random.Random(11).random, 5000)
    assert 1200 < first[1].count(SET_KIND) < 1800
    assert pool.batch(random.Random(11).random, 5000) == first


def test_sizes_cover_the_range() -> None:
    pool = RequestPool(BenchSettings(size=(5, 8), set_ratio=1.0))
    payload, _ = pool.batch(random.Random(5).random, 400)
    sizes = {len(parts[2]) for parts in decode_batch("text", payload)}
    assert sizes == {5, 6, 7, 8}


# -- text replies ------------------------------------------------------------------------------

text_reply = st.one_of(
    st.just((SET_KIND, b"OK", 0)),
    st.just((SET_KIND, b"ERROR too few live members", 1)),
    st.just((SET_KIND, b"NOT_FOUND", 1)),  # a wrong reply to a SET
    st.just((GET_KIND, b"NOT_FOUND", 0)),
    st.just((GET_KIND, b"ERROR no copy", 1)),
    st.builds(
        lambda value: (GET_KIND, value, 0),
        st.binary(min_size=1, max_size=40).filter(
            lambda value: b"\n" not in value and not value.startswith(b"ERROR")
        ),
    ),
)


@given(st.lists(text_reply, min_size=1, max_size=30), st.lists(st.integers(0, 2000)))
def test_text_replies_over_any_chunk_split(
    replies: list[tuple[int, bytes, int]], cuts: list[int]
) -> None:
    data = b"".join(line + b"\n" for _, line, _ in replies)
    reader = TextReplies(Counter())
    counts = [reader.feed(chunk) for chunk in chunked(data, cuts)]
    assert sum(counts) == len(replies)
    expected = bytes(kind for kind, _, _ in replies)
    assert reader.batch_errors(expected) == sum(error for _, _, error in replies)


def test_text_error_counting() -> None:
    sets = bytes([SET_KIND]) * 3
    gets = bytes([GET_KIND]) * 3
    assert count_text_errors(b"OK\nOK\nOK\n", sets) == 0
    assert count_text_errors(b"OK\r\nOK\nERROR busy\n", sets) == 1
    assert count_text_errors(b"OK\nOK\n", sets) == 1  # one missing
    assert count_text_errors(b"xx\nNOT_FOUND\nERROR gone\n", gets) == 1
    assert count_text_errors(b"OK\nxERROR\nERRORS\n", gets) == 1
    assert count_text_errors(b"OK\nOK\n", bytes([SET_KIND, GET_KIND])) == 0
    assert count_text_errors(b"xx\nOK\n", bytes([SET_KIND, GET_KIND])) == 1


def test_error_replies_are_counted_by_their_first_two_words() -> None:
    reasons: Counter[str] = Counter()
    sets = bytes([SET_KIND]) * 4
    body = b"ERROR NOREPLICAS only 1 of 3 copies\nOK\nERROR NOREPLICAS of k2\nNOT_FOUND\n"
    assert count_text_errors(body, sets, reasons) == 3
    assert reasons == {"ERROR NOREPLICAS": 2}  # NOT_FOUND to a SET is wrong, not an error reply
    resp: Counter[str] = Counter()
    reader = RespReplies(resp)
    assert reader.feed(b"-NOREPLICAS only 1\r\n+OK\r\n-ERR unknown command\r\n") == 3
    assert reader.batch_errors(b"+++") == 2
    assert resp == {"NOREPLICAS only": 1, "ERR unknown": 1}


def test_a_summary_names_the_errors_it_counts() -> None:
    result = BenchResult(
        settings=BenchSettings(),
        requests=100,
        errors=7,
        seconds=1.0,
        latency=latency_of([1.0]),
        error_replies={"ERROR NOREPLICAS": 4, "no reply (connection failed)": 2},
    )
    assert "  errors      4 ERROR NOREPLICAS, 2 no reply (connection failed), 1 wrong reply" in (
        result.summary()
    )
    assert result.as_json()["errors_by_kind"] == {
        "ERROR NOREPLICAS": 4,
        "no reply (connection failed)": 2,
        "wrong reply": 1,
    }


# -- RESP replies ------------------------------------------------------------------------------

Reply = tuple[int, bytes]  # (type byte of the top-level reply, its encoding)


def simple(kind: bytes) -> st.SearchStrategy[Reply]:
    line = st.binary(max_size=20).filter(lambda text: b"\r" not in text and b"\n" not in text)
    return line.map(lambda text: (kind[0], kind + text + b"\r\n"))


bulk: st.SearchStrategy[Reply] = st.one_of(
    st.binary(max_size=50).map(lambda value: (ord("$"), b"$%d\r\n%s\r\n" % (len(value), value))),
    st.just((ord("$"), b"$-1\r\n")),
)
scalar = st.one_of(
    simple(b"+"), simple(b"-"), st.integers().map(lambda n: (ord(":"), b":%d\r\n" % n)), bulk
)
resp_reply: st.SearchStrategy[Reply] = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(
            lambda items: (ord("*"), b"*%d\r\n" % len(items) + b"".join(e for _, e in items))
        ),
        st.just((ord("*"), b"*-1\r\n")),
    ),
    max_leaves=10,
)


VALUE_REPLY = b"$3\r\nxxx\r\n"  # what a GET of a bench value of 3 bytes returns
NIL: Reply = (ord("$"), b"$-1\r\n")
OK: Reply = (ord("+"), b"+OK\r\n")
common_reply = st.sampled_from([NIL, OK, (ord("$"), VALUE_REPLY)])


@given(
    st.lists(st.one_of(resp_reply, common_reply), max_size=25),
    st.lists(st.integers(0, 3000), max_size=30),
    st.sampled_from([b"", VALUE_REPLY]),
)
def test_resp_replies_over_any_chunk_split(
    replies: list[Reply], cuts: list[int], value_reply: bytes
) -> None:
    data = b"".join(encoding for _, encoding in replies)
    reader = RespReplies(Counter(), value_reply)
    total = 0
    for chunk in chunked(data, cuts):
        total += reader.feed(chunk)
        assert len(reader.kinds) == total
    assert total == len(replies)
    assert bytes(reader.kinds) == bytes(kind for kind, _ in replies)


@given(st.integers(0, 40), st.lists(st.integers(0, 300), max_size=10))
def test_runs_of_ok_take_the_fast_path_or_not_alike(oks: int, cuts: list[int]) -> None:
    data = b"+OK\r\n" * oks + b"$2\r\n+O\r\n" + b"+OK\r\n" * oks
    reader = RespReplies(Counter())
    assert sum(reader.feed(chunk) for chunk in chunked(data, cuts)) == 2 * oks + 1
    assert bytes(reader.kinds) == b"+" * oks + b"$" + b"+" * oks


@given(st.lists(common_reply, max_size=40), st.lists(st.integers(0, 400), max_size=5))
def test_runs_of_common_replies(replies: list[Reply], cuts: list[int]) -> None:
    data = b"".join(encoding for _, encoding in replies)
    reader = RespReplies(Counter(), VALUE_REPLY)
    assert sum(reader.feed(chunk) for chunk in chunked(data, cuts)) == len(replies)
    assert bytes(reader.kinds) == bytes(kind for kind, _ in replies)


def test_bulk_replies_that_merely_look_like_values_are_parsed() -> None:
    reader = RespReplies(Counter(), VALUE_REPLY)
    assert reader.feed(b"$9\r\n" + VALUE_REPLY + b"\r\n") == 1  # one bulk string holding one
    assert reader.feed(b"$3\r\nxxx\r\n$-1\r\n$4\r\nxxxx\r\n") == 3


def test_resp_batch_errors() -> None:
    reader = RespReplies(Counter())
    assert reader.feed(b"+OK\r\n$3\r\nabc\r\n$-1\r\n-ERR no\r\n:1\r\n") == 5
    assert reader.batch_errors(b"+$$+$") == 2  # the -ERR and the integer
    assert reader.kinds == b""
    assert reader.feed(b"+OK\r\n+OK\r\n") == 2
    assert reader.batch_errors(b"++") == 0
    assert reader.feed(b"+OK\r\n") == 1
    assert reader.batch_errors(b"++") == 1  # a missing reply


@pytest.mark.parametrize("data", [b"?what\r\n", b"$x\r\n", b"$3\r\nabcd\r\n", b"*z\r\n"])
def test_garbage_is_not_resp(data: bytes) -> None:
    with pytest.raises(RespError):
        RespReplies(Counter()).feed(data)


def test_values_encode_the_same_with_or_without_a_value_pool() -> None:
    pooled = RequestPool(BenchSettings(protocol="resp", size=(5, 10)))
    unpooled = RequestPool(BenchSettings(protocol="resp", size=(5, 10**6)))
    assert pooled.encode_value(7) == unpooled.encode_value(7) == b"$7\r\nxxxxxxx\r\n"
    text = RequestPool(BenchSettings(protocol="text", size=(5, 10**6)))
    assert text.encode_value(7) == b"xxxxxxx\n"
