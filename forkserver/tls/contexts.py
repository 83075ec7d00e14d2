"""Server SSL contexts, built in the master before fork, and certificate choice by SNI.

Owns the TLS settings every listener gets (TLS 1.2 and 1.3 only, no compression, no
renegotiation, ECDHE+AEAD suites for 1.2, ALPN ``http/1.1``, session tickets) and
the SNI callback that picks a site's certificate by SPEC §7's rules and records the
site it picked for the HTTP layer (421 when Host picks another). Contexts are made
once per generation in the master: every worker forked from it shares the ticket
keys, so a session resumes on whichever worker takes the next connection; when
start-up found the kernel able to encrypt, each context also asks OpenSSL for kTLS
(forkserver/tls/ktls.py). Must not read sockets or know about HTTP; which site
claims a name is the site table's business (``SiteNames``), this module only asks it.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from forkserver.tls.certificates import Certificate
from forkserver.tls.ktls import NOT_DETECTED, Detection, request_ktls

ALPN_PROTOCOLS = ["http/1.1"]  # RFC 7301; h2 is not spoken, so never selected
# TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only (RFC 7525 §4.2, Mozilla's
# "intermediate" profile), server order. TLS 1.3 suites are all AEAD and fixed by OpenSSL.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
# Attribute set on the SSL object by the SNI callback: the key (the site's name) of the
# site the client's server name picked by name (None: no SNI, or a name no site claims).
SNI_SITE_ATTRIBUTE = "forkserver_sni_site"


class SiteNames(Protocol):
    """What the SNI choice needs from the site table: forkserver.sites.SiteTable[str],
    built with each site's key (its name, the first of its names) as the site."""

    def claimant(self, name: str) -> str | None:
        """The site that claims a normalized name: exact, then the longest ``*.`` suffix."""

    @property
    def default(self) -> str | None:
        """The ``default: true`` site, if any."""


def normalize_name(name: str) -> str:
    """SNI is an ASCII host name (RFC 6066 §3): compare it lower-cased, no final dot."""
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def server_context(certificate: Certificate) -> ssl.SSLContext:
    """A server context for one certificate, with every setting of docs/security.md."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[certificate.settings.min_version]
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    # RFC 7457 §2.6 (CRIME): no TLS compression. RFC 5746 renegotiation is refused
    # outright: a client-initiated one costs the server a handshake per request.
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    # Session tickets (RFC 5077, RFC 8446 §4.6.1): the keys live in this context, made
    # before fork, so any worker of the generation can decrypt a ticket.
    context.options &= ~ssl.OP_NO_TICKET
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    settings = certificate.settings
    assert settings.certificate is not None and settings.key is not None  # load_certificate
    context.load_cert_chain(settings.certificate, settings.key)
    return context


@dataclass
class TlsContexts:
    """A generation's contexts: the default, and per site by the site's key.

    ``base`` is the context every TLS listener's connections start with (the
    top-level ``tls``, else the default site's); the SNI callback moves a connection
    to its site's context. Build with ``build_contexts``.
    """

    base: ssl.SSLContext
    per_site: Mapping[str, ssl.SSLContext] = field(default_factory=dict)
    names: SiteNames | None = None

    def choose(self, server_name: str | None) -> tuple[str | None, ssl.SSLContext]:
        """(site picked by name or None, context) for an SNI name — SPEC §7's rules."""
        site = None
        if server_name and self.names is not None:
            site = self.names.claimant(normalize_name(server_name))
        if site is not None:
            return site, self.per_site.get(site, self.base)
        default = self.names.default if self.names is not None else None
        if default is not None and default in self.per_site:
            return None, self.per_site[default]
        return None, self.base

    def on_server_name(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
        context: ssl.SSLContext,
    ) -> int | None:
        """The SNI callback: the site's context, and the site recorded for the 421 rule."""
        site, chosen = self.choose(server_name)
        setattr(ssl_object, SNI_SITE_ATTRIBUTE, site)
        if chosen is not context:
            ssl_object.context = chosen
        return None  # go on with the handshake


def build_contexts(
    default: Certificate | None, sites: Mapping[str, Certificate] | None = None,
    names: SiteNames | None = None, ktls: Detection = NOT_DETECTED,
) -> TlsContexts:
    """Contexts for a generation; call in the master, before the workers fork.

    ``default`` is the top-level certificate; ``sites`` the certificates of the sites
    that have their own ``tls`` (by site key). At least one is needed. ``ktls``: the
    generation's detection; when available every context asks OpenSSL for kTLS.
    """
    sites = sites or {}
    per_site = {index: server_context(certificate) for index, certificate in sites.items()}
    if default is not None:
        base = server_context(default)
    else:
        fallback = names.default if names is not None else None
        if fallback not in per_site:
            fallback = min(per_site, default=None)
        if fallback is None:
            raise ValueError("a TLS listener needs a certificate: top-level tls or a site's")
        base = per_site[fallback]
    contexts = TlsContexts(base, per_site, names)
    for context in {id(c): c for c in (base, *per_site.values())}.values():
        request_ktls(context, ktls)
        if names is not None:
            context.sni_callback = contexts.on_server_name
    return contexts


def sni_site(ssl_object: object) -> str | None:
    """The site the SNI name picked on this connection, if any (after the handshake)."""
    site = getattr(ssl_object, SNI_SITE_ATTRIBUTE, None)
    return site if isinstance(site, str) else None
