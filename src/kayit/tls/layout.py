"""Where a TLS dir keeps what (see ``kayit.tls.authority``), and what names an identity may
have. Free of the cryptography library, so that reading a TLS dir does not load it."""

from __future__ import annotations

import re

from kayit.config import ConfigError

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
NODE_CERT = "node.crt"
NODE_KEY = "node.key"
ADMIN = "admin"  # the identity ``kayit status`` and the other tools present

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """An identity's name is a directory name: letters, digits, '.', '_' and '-'."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"bad certificate name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
