"""One address parser for every command: HOST, HOST:PORT, :PORT, PORT (and [IPv6]:PORT)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kayit.addresses import AddressError, format_address, parse_address

DEFAULT = 5555

hostnames = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(1, 65535)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("node1", ("node1", DEFAULT)),
        ("10.0.0.7", ("10.0.0.7", DEFAULT)),
        ("node1:7000", ("node1", 7000)),
        (":7000", ("127.0.0.1", 7000)),
        ("7000", ("127.0.0.1", 7000)),
        (" 7000 ", ("127.0.0.1", 7000)),
        ("[::1]", ("::1", DEFAULT)),
        ("[::1]:7000", ("::1", 7000)),
        ("fe80::1%eth0", ("fe80::1%eth0", DEFAULT)),
    ],
)
def test_every_form(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text, DEFAULT) == address


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty address"),
        ("host:port", "not a port number in 'host:port'"),
        ("127.0.0.1:notaport", "not a port number in '127.0.0.1:notaport'"),
        ("host:", "not a port number in 'host:'"),
        ("host:0", "port out of range in 'host:0'"),
        ("70000", "port out of range in '70000'"),
        ("host:+1", "not a port number in 'host:+1'"),
        ("a b:1", "not HOST:PORT: 'a b:1'"),
        ("[::1", "not HOST:PORT: '[::1'"),
        ("[::1]x", "not HOST:PORT: '[::1]x'"),
        ("x:y:z", "not HOST:PORT: 'x:y:z'"),
    ],
)
def test_bad_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as refused:
        parse_address(text, DEFAULT)
    assert str(refused.value) == reason


@given(st.one_of(hostnames, ipv4, ipv6), ports)
def test_a_formatted_address_reads_back(host: str, port: int) -> None:
    assert parse_address(format_address((host, port)), DEFAULT) == (host, port)


@given(st.one_of(hostnames, ipv4, ipv6))
def test_a_host_alone_takes_the_default_port(host: str) -> None:
    assert parse_address(host, DEFAULT) == (host, DEFAULT)


@given(ports, st.sampled_from(["", ":"]))
def test_a_port_alone_takes_the_default_host(port: int, colon: str) -> None:
    assert parse_address(f"{colon}{port}", DEFAULT, "node9") == ("node9", port)


@given(st.text(max_size=30))
def test_any_text_is_an_address_or_an_address_error(text: str) -> None:
    try:
        host, port = parse_address(text, DEFAULT)
    except AddressError:
        return
    assert host and 1 <= port <= 65535
