"""Who may use the client ports: loopback addresses for protected mode, and the password."""

from __future__ import annotations

import pytest

from kayit.protocol.commands import AuthCommand
from kayit.server.access import ClientAccess, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.3.4", True),  # all of 127.0.0.0/8
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 peer of a dual-stack socket
        ("::ffff:7f00:2", True),  # the same, written in hex: 127.0.0.2
        ("localhost", True),
        ("10.0.0.1", False),
        ("198.51.100.7", False),
        ("0.0.0.0", False),
        ("::", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:198.51.100.7", False),
        ("::2", False),
        ("fe80::1%eth0", False),
        ("2001:db8::1", False),
        ("example.com", False),  # a name could resolve anywhere
        ("", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_protected_mode_admits_loopback_only(host: str) -> None:
    access = ClientAccess(None)
    assert access.admits(host)
    for stranger in ("198.51.100.7", "2001:db8::1", "::ffff:198.51.100.7"):
        assert not access.admits(stranger)


def test_a_password_or_insecure_lifts_protected_mode() -> None:
    assert ClientAccess(b"secret").admits("198.51.100.7")
    assert ClientAccess(None, insecure=True).admits("198.51.100.7")
    assert ClientAccess(b"secret").admits("2001:db8::1")


def test_the_password_of_the_default_user() -> None:
    access = ClientAccess(b"s3cret pass")
    assert access.requires_auth
    assert access.accepts(AuthCommand(b"s3cret pass"))
    assert access.accepts(AuthCommand(b"s3cret pass", b"default"))
    assert not access.accepts(AuthCommand(b"s3cret pass", b"admin"))  # no other user
    for wrong in (b"", b"s3cret", b"s3cret pass ", b"S3CRET PASS", b"s3cret pass\x00"):
        assert not access.accepts(AuthCommand(wrong))


def test_without_a_password_the_default_user_takes_any() -> None:
    access = ClientAccess(None)
    assert not access.requires_auth
    assert access.accepts(AuthCommand(b"anything", b"default"))
    assert not access.accepts(AuthCommand(b"anything", b"admin"))


def test_the_warning_at_start_names_the_risk() -> None:
    assert ClientAccess(None).exposure_warning("127.0.0.1") is None
    assert ClientAccess(None, insecure=True).exposure_warning("::1") is None
    assert ClientAccess(b"pw").exposure_warning("0.0.0.0") is None
    protected = ClientAccess(None).exposure_warning("0.0.0.0")
    assert protected is not None and "protected mode" in protected
    insecure = ClientAccess(None, insecure=True).exposure_warning("0.0.0.0")
    assert insecure is not None and "without authentication" in insecure
