"""kayit certs: the authority and the certificates it issues; the cluster check's rule."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from kayit.cli import main
from kayit.config import ConfigError
from kayit.rpc.security import refusal
from kayit.tls.authority import init_authority, issue
from kayit.tls.identity import TlsIdentity
from kayit.tls.layout import ADMIN, CA_CERT, CA_KEY, NODE_CERT, NODE_KEY


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_makes_a_ca_and_the_admin_identity_with_private_keys(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    init_authority(tls)
    ca = _certificate(tls / CA_CERT)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    admin = _certificate(tls / ADMIN / NODE_CERT)
    admin.verify_directly_issued_by(ca)
    for key in (tls / CA_KEY, tls / ADMIN / NODE_KEY):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_a_node_certificate_names_its_hosts_and_serves_both_ends(tmp_path: Path) -> None:
    init_authority(tmp_path)
    issue(tmp_path, "node-5555", ["127.0.0.1", "::1", "node1.example.net", "127.0.0.1"])
    certificate = _certificate(tmp_path / "node-5555" / NODE_CERT)
    certificate.verify_directly_issued_by(_certificate(tmp_path / CA_CERT))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert names.get_values_for_type(x509.DNSName) == ["node1.example.net"]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_nothing_in_use_is_overwritten(tmp_path: Path) -> None:
    init_authority(tmp_path)
    ca = (tmp_path / CA_CERT).read_bytes()
    with pytest.raises(ConfigError, match="already holds a certificate authority"):
        init_authority(tmp_path)
    assert (tmp_path / CA_CERT).read_bytes() == ca
    issue(tmp_path, "n", ["127.0.0.1"])
    with pytest.raises(ConfigError, match="already holds a certificate"):
        issue(tmp_path, "n", ["127.0.0.1"])


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65])
def test_a_name_that_is_not_a_plain_directory_name_is_refused(tmp_path: Path, name: str) -> None:
    init_authority(tmp_path / "tls")
    with pytest.raises(ConfigError, match="bad certificate name"):
        issue(tmp_path / "tls", name, ["127.0.0.1"])
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [ADMIN, CA_CERT, CA_KEY]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tls"]


@pytest.mark.parametrize("host", ["", "a b", "http://x", "user@host"])
def test_a_host_that_is_no_name_or_address_is_refused(tmp_path: Path, host: str) -> None:
    init_authority(tmp_path)
    with pytest.raises(ConfigError, match="bad host"):
        issue(tmp_path, "n", [host])
    assert not (tmp_path / "n").exists()


def test_issuing_without_an_authority_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kayit certs init"):
        issue(tmp_path, "n", ["127.0.0.1"])


def test_loading_a_missing_identity_says_how_to_make_it(tmp_path: Path) -> None:
    init_authority(tmp_path)
    with pytest.raises(ConfigError, match="kayit certs add"):
        TlsIdentity.load(tmp_path, "node-5555")
    identity = TlsIdentity.load(tmp_path, ADMIN)
    assert identity.ca == (tmp_path / CA_CERT).read_bytes()


def test_the_certs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "init", str(tmp_path / "tls")]) == 0
    assert main(["certs", "add", str(tmp_path / "tls"), "n1", "--hosts", "127.0.0.1,n1"]) == 0
    assert (tmp_path / "tls" / "n1" / NODE_KEY).exists()
    assert main(["certs", "init", str(tmp_path / "tls")]) == 2
    assert "already holds" in capsys.readouterr().err


def test_the_cluster_rule() -> None:
    store, status = "/kayit.Node/StoreMany", "/kayit.Node/Status"
    assert refusal(store, None, None) is None  # a node in no cluster yet has nothing to guard
    assert refusal(store, "c1", "c1") is None
    assert refusal(status, None, "c1") is None  # tools know no id
    assert "not to cluster c2" in (refusal(status, "c2", "c1") or "")
    assert "must name it" in (refusal(store, None, "c1") or "")
