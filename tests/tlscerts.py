"""Certificates for the TLS tests, made with the real ``openssl`` command line.

A throw-away authority signs leaves (ECDSA P-256 or RSA, any validity window, SAN
names); self-signed certificates and mismatched keys for the error cases. Nothing
is mocked: the files are what certbot or an operator would hand the server.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from forkserver.config.model import TlsSettings

CA_CONFIG = """\
[ca]
default_ca = local
[local]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
[anything]
commonName = supplied
"""


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def new_key_args(kind: str) -> list[str]:
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


@dataclass(frozen=True)
class Issued:
    certificate: Path  # leaf, then the authority's certificate
    key: Path
    leaf: Path  # the leaf alone

    def settings(self, min_version: str = "TLSv1.2") -> TlsSettings:
        return TlsSettings(str(self.certificate), str(self.key), min_version)


class Authority:
    """A test certificate authority in ``directory``."""

    def __init__(self, directory: Path, name: str = "forkserver test CA") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "index.txt").write_text("")
        (directory / "serial").write_text("1000\n")
        (directory / "ca.cnf").write_text(CA_CONFIG.format(dir=directory))
        self.certificate = directory / "ca.pem"
        self.key = directory / "ca.key"
        openssl(
            "req", "-x509", *new_key_args("ec"), "-nodes", "-keyout", str(self.key),
            "-out", str(self.certificate), "-days", "30", "-subj", f"/CN={name}",
        )
        self.count = 0

    def issue(
        self, *names: str, kind: str = "ec", start: str | None = None, end: str | None = None,
        common_name: str | None = None, san: bool = True, ips: tuple[str, ...] = (),
        extensions: tuple[str, ...] = (),
    ) -> Issued:
        """A leaf for ``names`` (SAN DNS names, and ``ips``); ``start``/``end`` as
        YYYYMMDDHHMMSSZ; ``extensions`` more ``-addext`` values."""
        self.count += 1
        stem = self.dir / f"leaf{self.count}"
        key, csr = stem.with_suffix(".key"), stem.with_suffix(".csr")
        leaf = stem.with_suffix(".crt")
        alt = [f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips]
        extra = ["-addext", "subjectAltName=" + ",".join(alt)] if san else []
        for extension in extensions:
            extra += ["-addext", extension]
        openssl(
            "req", "-new", *new_key_args(kind), "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={common_name or names[0]}", *extra,
        )
        window = ["-days", "30"]
        if start or end:
            window = [
                "-startdate", start or "20200101000000Z", "-enddate", end or "20991231000000Z",
            ]
        openssl(
            "ca", "-batch", "-notext", "-config", str(self.dir / "ca.cnf"),
            "-cert", str(self.certificate), "-keyfile", str(self.key), "-in", str(csr),
            "-out", str(leaf), *window,
        )
        chain = stem.with_suffix(".pem")
        chain.write_bytes(leaf.read_bytes() + self.certificate.read_bytes())
        return Issued(chain, key, leaf)


def self_signed(directory: Path, name: str, kind: str = "ec") -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    openssl(
        "req", "-x509", *new_key_args(kind), "-nodes", "-keyout", str(key), "-out", str(cert),
        "-days", "30", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
    )
    return Issued(cert, key, cert)


def lone_key(directory: Path, name: str, kind: str = "ec") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}.key"
    option = "rsa_keygen_bits:2048" if kind == "rsa" else "ec_paramgen_curve:P-256"
    algorithm = "RSA" if kind == "rsa" else "EC"
    openssl("genpkey", "-algorithm", algorithm, "-pkeyopt", option, "-out", str(key))
    return key
