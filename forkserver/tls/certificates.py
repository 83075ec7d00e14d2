"""Certificates: a PEM chain and its key, checked and described before any fork.

Owns reading a certificate file and its key, the errors that name the file at fault
(unreadable, not PEM, encrypted key, a key that does not match, expired), and what
``--check`` prints: subject names and expiry, with a warning within
``EXPIRY_WARNING_DAYS``. Uses the standard library's ``ssl`` only (OpenSSL parses
the files; nothing here parses certificate bytes itself). Must not build server
contexts (contexts.py) or touch sockets.
"""

from __future__ import annotations

import _ssl
import ssl
import time
from dataclasses import dataclass

from forkserver.config.model import TlsSettings

EXPIRY_WARNING_DAYS = 14  # SPEC §6: --check warns when a certificate expires this soon
DAY_SECONDS = 86400
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
MAX_PEM_BYTES = 1 << 20  # a chain is a few KiB; a larger "certificate" is a wrong path


class CertificateError(Exception):
    """A certificate or key file that cannot be served: ``PATH: why``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Certificate:
    """A checked certificate: its files, the names it serves and when it expires."""

    settings: TlsSettings
    names: tuple[str, ...]  # SAN DNS names, else the subject's CN
    not_before: float  # seconds since the epoch
    not_after: float

    def days_left(self, now: float) -> float:
        return (self.not_after - now) / DAY_SECONDS

    def expires_soon(self, now: float) -> bool:
        return self.days_left(now) < EXPIRY_WARNING_DAYS

    def describe(self, now: float) -> str:
        """One line for --check: file, names, expiry."""
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.not_after))
        names = ", ".join(self.names) or "(no names)"
        return (
            f"{self.settings.certificate}: {names}; expires {when} "
            f"(in {self.days_left(now):.0f} days)"
        )


def _read_pem(path: str, what: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise CertificateError(path, f"cannot read the {what}: {exc.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise CertificateError(path, f"is larger than {MAX_PEM_BYTES} bytes; not a PEM {what}")
    return data.decode("latin-1")


def _names(fields: dict[str, object]) -> tuple[str, ...]:
    sans = fields.get("subjectAltName", ())
    dns = [str(value) for kind, value in sans if kind == "DNS"]  # type: ignore[attr-defined]
    if dns:
        return tuple(dns)
    for rdn in fields.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return (str(value),)
    return ()


def _decode_leaf(path: str) -> dict[str, object]:
    """The leaf's fields, parsed by OpenSSL (the first certificate in the file)."""
    try:
        fields: dict[str, object] = _ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise CertificateError(path, f"is not a valid PEM certificate ({_reason(exc)})") from None
    return fields


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason.replace("_", " ").lower()
    return str(exc) or type(exc).__name__


def load_certificate(settings: TlsSettings, now: float | None = None) -> Certificate:
    """Check a certificate file and its key as a server would load them.

    Raises CertificateError naming the file at fault. ``now`` (epoch seconds) decides
    expiry; a test passes its own.
    """
    now = time.time() if now is None else now
    cert_path, key_path = settings.certificate, settings.key
    if cert_path is None or key_path is None:
        raise CertificateError(cert_path or key_path or "tls", "needs a certificate and a key")
    cert_text = _read_pem(cert_path, "certificate")
    if PEM_CERTIFICATE not in cert_text:
        raise CertificateError(cert_path, "has no PEM certificate (-----BEGIN CERTIFICATE-----)")
    key_text = _read_pem(key_path, "key")
    if "PRIVATE KEY-----" not in key_text:
        raise CertificateError(key_path, "has no PEM private key (-----BEGIN ... PRIVATE KEY-----)")
    if "ENCRYPTED" in key_text:
        # OpenSSL would prompt for a passphrase on the terminal; a server cannot.
        raise CertificateError(key_path, "is encrypted; forkserver needs an unencrypted key")
    fields = _decode_leaf(cert_path)
    # Every certificate of the chain must parse, not only the leaf.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert_path)
    except ssl.SSLError as exc:
        raise CertificateError(cert_path, f"has a malformed certificate ({_reason(exc)})") from None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        server.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as exc:
        if getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
            raise CertificateError(
                key_path, f"does not match the certificate {cert_path}"
            ) from None
        raise CertificateError(key_path, f"is not a valid private key ({_reason(exc)})") from None
    except OSError as exc:  # the files went away between the reads and here
        raise CertificateError(cert_path, f"cannot be loaded: {exc.strerror}") from None
    not_before = ssl.cert_time_to_seconds(str(fields["notBefore"]))
    not_after = ssl.cert_time_to_seconds(str(fields["notAfter"]))
    if not_after <= now:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(not_after))
        raise CertificateError(cert_path, f"expired on {when}")
    return Certificate(settings, _names(fields), float(not_before), float(not_after))


def _no_password() -> bytes:
    # Never reached for an unencrypted key; stops OpenSSL prompting on a terminal.
    raise CertificateError("key", "is encrypted; forkserver needs an unencrypted key")


def check_lines(certificates: list[Certificate], now: float) -> tuple[list[str], list[str]]:
    """(lines, warnings) for --check: each certificate, and those expiring soon."""
    lines = [certificate.describe(now) for certificate in certificates]
    warnings = [
        f"{c.settings.certificate} expires in {c.days_left(now):.1f} days "
        f"(less than {EXPIRY_WARNING_DAYS}); renew it"
        for c in certificates
        if c.expires_soon(now)
    ]
    return lines, warnings
