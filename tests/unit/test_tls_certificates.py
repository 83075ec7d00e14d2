"""Certificates and keys as the server loads them: names, expiry, errors naming the file.

Every file is made by the real ``openssl`` command line (tests/tlscerts.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forkserver.config.model import TlsSettings
from forkserver.tls.certificates import (
    EXPIRY_WARNING_DAYS,
    CertificateError,
    check_lines,
    load_certificate,
)
from tests.tlscerts import Authority, lone_key, openssl, self_signed


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_chain_loads_with_the_leafs_names(authority: Authority, kind: str) -> None:
    issued = authority.issue("example.org", "*.example.net", kind=kind)
    certificate = load_certificate(issued.settings())
    assert certificate.names == ("example.org", "*.example.net")
    assert certificate.not_before < time.time() < certificate.not_after


def test_without_subject_alt_names_the_common_name_is_the_name(authority: Authority) -> None:
    issued = authority.issue("legacy.example", san=False)
    assert load_certificate(issued.settings()).names == ("legacy.example",)


def test_a_self_signed_certificate_loads(tmp_path: Path) -> None:
    issued = self_signed(tmp_path, "localhost", kind="rsa")
    assert load_certificate(issued.settings()).names == ("localhost",)


def test_an_expired_certificate_names_its_file(authority: Authority) -> None:
    issued = authority.issue("old.example", start="20200101000000Z", end="20200102000000Z")
    with pytest.raises(CertificateError) as caught:
        load_certificate(issued.settings())
    assert caught.value.path == str(issued.certificate)
    assert "expired on 2020-01-02" in str(caught.value)


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_key_of_another_certificate_is_refused(
    authority: Authority, tmp_path: Path, kind: str
) -> None:
    issued = authority.issue("example.org", kind=kind)
    other = lone_key(tmp_path, "other", kind=kind)
    with pytest.raises(CertificateError) as caught:
        load_certificate(TlsSettings(str(issued.certificate), str(other)))
    assert caught.value.path == str(other)
    assert f"does not match the certificate {issued.certificate}" in str(caught.value)


def test_an_unreadable_file_names_the_file(authority: Authority, tmp_path: Path) -> None:
    issued = authority.issue("example.org")
    missing = tmp_path / "missing.pem"
    with pytest.raises(CertificateError, match="cannot read the certificate: No such file"):
        load_certificate(TlsSettings(str(missing), str(issued.key)))
    with pytest.raises(CertificateError, match=r"missing\.pem: cannot read the key"):
        load_certificate(TlsSettings(str(issued.certificate), str(missing)))


def test_a_key_given_as_the_certificate_is_refused(authority: Authority) -> None:
    issued = authority.issue("example.org")
    with pytest.raises(CertificateError, match="has no PEM certificate") as caught:
        load_certificate(TlsSettings(str(issued.key), str(issued.key)))
    assert caught.value.path == str(issued.key)


def test_a_certificate_given_as_the_key_is_refused(authority: Authority) -> None:
    issued = authority.issue("example.org")
    with pytest.raises(CertificateError, match="has no PEM private key") as caught:
        load_certificate(TlsSettings(str(issued.certificate), str(issued.certificate)))
    assert caught.value.path == str(issued.certificate)


def test_a_damaged_certificate_is_refused(authority: Authority, tmp_path: Path) -> None:
    issued = authority.issue("example.org")
    text = issued.leaf.read_text().splitlines()
    text[3] = text[3][::-1]  # base64 still, DER no more
    damaged = tmp_path / "damaged.pem"
    damaged.write_text("\n".join(text) + "\n")
    with pytest.raises(CertificateError, match=r"damaged\.pem: is not a valid PEM certificate"):
        load_certificate(TlsSettings(str(damaged), str(issued.key)))


def test_a_damaged_certificate_later_in_the_chain_is_refused(
    authority: Authority, tmp_path: Path
) -> None:
    issued = authority.issue("example.org")
    ca_lines = authority.certificate.read_text().splitlines()
    ca_lines[2] = "AAAA" + ca_lines[2][4:][::-1]
    chain = tmp_path / "chain.pem"
    chain.write_text(issued.leaf.read_text() + "\n".join(ca_lines) + "\n")
    with pytest.raises(CertificateError, match=r"chain\.pem: has a malformed certificate"):
        load_certificate(TlsSettings(str(chain), str(issued.key)))


def test_a_damaged_key_is_refused(authority: Authority, tmp_path: Path) -> None:
    issued = authority.issue("example.org")
    damaged = tmp_path / "damaged.key"
    lines = issued.key.read_text().splitlines()
    lines[1] = lines[1][::-1]
    damaged.write_text("\n".join(lines) + "\n")
    with pytest.raises(CertificateError, match=r"damaged\.key: is not a valid private key"):
        load_certificate(TlsSettings(str(issued.certificate), str(damaged)))


def test_an_encrypted_key_is_refused_without_a_prompt(authority: Authority, tmp_path: Path) -> None:
    issued = authority.issue("example.org")
    encrypted = tmp_path / "encrypted.key"
    openssl(
        "pkey", "-in", str(issued.key), "-aes256", "-passout", "pass:secret",
        "-out", str(encrypted),
    )
    with pytest.raises(CertificateError, match=r"encrypted\.key: is encrypted"):
        load_certificate(TlsSettings(str(issued.certificate), str(encrypted)))


def test_check_warns_within_fourteen_days(authority: Authority) -> None:
    soon_end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() + 5 * 86400))
    soon = load_certificate(authority.issue("soon.example", end=soon_end).settings())
    later = load_certificate(authority.issue("later.example").settings())
    lines, warnings = check_lines([soon, later], time.time())
    assert lines[0].startswith(f"{soon.settings.certificate}: soon.example; expires ")
    assert "(in 5 days)" in lines[0]
    assert "later.example" in lines[1]
    assert len(warnings) == 1
    assert f"less than {EXPIRY_WARNING_DAYS}" in warnings[0]
    assert warnings[0].startswith(str(soon.settings.certificate))
