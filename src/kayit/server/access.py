"""Who may use the client ports: the password clients give with AUTH, and protected mode.

As Redis does: a node given a password (``--requirepass``) answers every command but AUTH
(and HELLO with AUTH, and QUIT) with NOAUTH until the connection has given it. A node given
none serves only clients on loopback addresses, unless it is told ``--insecure``: a client
from another host gets one DENIED line saying what to do, and is closed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from kayit.protocol.commands import AuthCommand

DEFAULT_USER = b"default"  # the one user there is, as Redis calls it

# Replies, in the words of Redis where it has them (clients and people know them).
NOAUTH_REASON = "Authentication required."
WRONGPASS_REASON = "invalid username-password pair or user is disabled."
NO_PASSWORD_REASON = (
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)
HELLO_NOAUTH_REASON = (
    "HELLO must be called with the client already authenticated; HELLO 2 AUTH <user> <pass> "
    "authenticates the client and chooses the protocol at once"
)
DENIED_REASON = (
    "kayit is running in protected mode: no password is set, so only clients on this host "
    "(loopback addresses) are served. To serve other hosts, start the node with "
    "--requirepass PASSWORD (or --requirepass-file FILE) and have clients send AUTH PASSWORD "
    "first, or with --insecure to serve anyone who can reach it without a password"
)


class ClientAccess:
    def __init__(self, password: bytes | None, insecure: bool = False) -> None:
        # Kept as a digest: comparing two digests of equal length in constant time tells an
        # attacker nothing, not even the password's length.
        self._digest = None if password is None else _digest(password)
        self.insecure = insecure

    @property
    def requires_auth(self) -> bool:
        return self._digest is not None

    def accepts(self, auth: AuthCommand) -> bool:
        """Whether ``auth`` names the default user (or none) and the right password. With no
        password set the default user takes any password, as in Redis."""
        if auth.username not in (None, DEFAULT_USER):
            return False
        if self._digest is None:
            return True
        return hmac.compare_digest(_digest(auth.password), self._digest)

    def admits(self, peer_host: str) -> bool:
        """Whether a client from ``peer_host`` (its IP address) may connect at all."""
        return self.requires_auth or self.insecure or is_loopback(peer_host)

    def exposure_warning(self, host: str) -> str | None:
        """What the log should say at start about serving ``host``; None when it is loopback
        or clients must authenticate."""
        if self.requires_auth or is_loopback(host):
            return None
        if self.insecure:
            return (
                f"clients on {host} are served without authentication (--insecure): anyone who "
                "can reach this address can read and write every message; consider "
                "--requirepass-file FILE"
            )
        return (
            f"listening for clients on {host} in protected mode: without --requirepass only "
            "clients on this host (loopback) are served; others are refused with ERROR DENIED. "
            "Set --requirepass-file FILE (or --requirepass), or --insecure"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address: 127.0.0.0/8, ::1, or 127.x mapped into IPv6
    (``::ffff:127.0.0.1``, as a dual-stack socket reports an IPv4 peer). Anything else,
    names included, is not; ``localhost`` is, by name."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone (%eth0)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _digest(password: bytes) -> bytes:
    return hashlib.sha256(password).digest()
