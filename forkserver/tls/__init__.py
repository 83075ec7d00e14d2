"""HTTPS: settings, certificates, server contexts and the worker's TLS transport.

Owns everything TLS (SPEC §6 and the SNI part of §7) as a transport between the
socket and the HTTP parser; the HTTP core never knows whether bytes were encrypted.
Must not parse HTTP or choose sites itself (forkserver/sites answers which site a
name picks).
"""

from forkserver.tls.certificates import Certificate, CertificateError, check_lines, load_certificate
from forkserver.tls.contexts import SiteNames, TlsContexts, build_contexts, sni_site
from forkserver.tls.ktls import ktls_unavailable
from forkserver.tls.transport import HandshakeFailed, TlsStream

__all__ = [
    "Certificate",
    "CertificateError",
    "HandshakeFailed",
    "SiteNames",
    "TlsContexts",
    "TlsStream",
    "build_contexts",
    "check_lines",
    "ktls_unavailable",
    "load_certificate",
    "sni_site",
]
