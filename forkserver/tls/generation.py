"""A generation's TLS: its certificates loaded and its contexts built, in the master.

Owns what the master does for TLS before it forks a generation's workers: read and
check every certificate the configuration names (top-level ``tls`` and each site's
own), build the contexts (so the workers share the session-ticket keys), and mark
which of the generation's listeners speak TLS, and whether the kernel may encrypt
(kTLS, detected once per generation). Also the ``--check`` lines. Must not
accept, read or write connections (the worker's tlsphase does) or bind sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from forkserver.config import Config
from forkserver.config.listen import listen_entries
from forkserver.config.model import TlsSettings
from forkserver.listeners import same_address
from forkserver.sites.hosts import SiteTable
from forkserver.tls.certificates import Certificate, CertificateError, check_lines, load_certificate
from forkserver.tls.contexts import TlsContexts, build_contexts
from forkserver.tls.ktls import Detection, detect


@dataclass(frozen=True, slots=True)
class GenerationTls:
    """Handed to every worker of a generation (WorkerSpec.tls)."""

    contexts: TlsContexts
    secure_fds: frozenset[int]  # the listeners whose connections start with a handshake
    https_port: int | None  # the first TCP TLS listener's port (redirect_to_https)
    ktls: Detection  # the contexts asked OpenSSL for kTLS (available), or why not


def site_certificates(config: Config) -> dict[str, TlsSettings]:
    """Each site's own ``tls``, by the site's key (its first name)."""
    found: dict[str, TlsSettings] = {}
    for site in getattr(config, "sites", ()):
        own = dict(site.overrides).get("tls")
        if isinstance(own, TlsSettings):
            found[site.names[0]] = own
    return found


def wanted(config: Config) -> bool:
    return any(entry.tls for entry in listen_entries(config))


def load_all(config: Config, now: float | None = None) -> tuple[Certificate | None,
                                                                dict[str, Certificate]]:
    """Every certificate the configuration names; CertificateError for the first bad one."""
    top = None
    if config.tls.certificate is not None:
        top = load_certificate(config.tls, now)
    return top, {name: load_certificate(s, now) for name, s in site_certificates(config).items()}


def certificate_problems(config: Config) -> list[str]:
    """What start-up, ``--check`` and a reload refuse: ``tls: FILE: why``."""
    try:
        top, sites = load_all(config)
    except CertificateError as exc:
        return [f"tls: {exc}"]
    if wanted(config) and top is None and not sites:
        return ["tls: a TLS listener needs a certificate: set tls.certificate and tls.key, "
                "or tls on a site"]
    return []


def check_report(config: Config) -> tuple[list[str], list[str]]:
    """(lines, warnings) for ``--check``: each certificate's names and expiry."""
    try:
        top, sites = load_all(config)
    except CertificateError:
        return [], []  # certificate_problems reports it
    certificates = ([top] if top is not None else []) + list(sites.values())
    return check_lines(certificates, time.time())


def secure_fds(config: Config, listeners: Sequence[socket.socket]) -> frozenset[int]:
    """The listeners that speak TLS: paired with ``listen`` entries by position when
    there are as many (bound in order, handed over in order), else by address."""
    entries = listen_entries(config)
    if len(entries) == len(listeners):
        return frozenset(s.fileno() for s, e in zip(listeners, entries, strict=True) if e.tls)
    return frozenset(
        s.fileno() for s in listeners
        if any(e.tls and same_address(s, e.host, e.port) for e in entries)
    )


def prepare(config: Config, listeners: Sequence[socket.socket]) -> GenerationTls | None:
    """The generation's TLS, or None without a TLS listener. Raises CertificateError."""
    fds = secure_fds(config, listeners)
    if not fds:
        return None
    top, sites = load_all(config)
    table = None
    if getattr(config, "sites", ()):
        table = SiteTable(
            [(site.names, site.names[0]) for site in config.sites],
            next((site.names[0] for site in config.sites if site.default), None),
        )
    ktls = detect()
    contexts = build_contexts(top, sites, table, ktls)
    port = next((s.getsockname()[1] for s in listeners
                 if s.fileno() in fds and s.family != socket.AF_UNIX), None)
    return GenerationTls(contexts, fds, port, ktls)
