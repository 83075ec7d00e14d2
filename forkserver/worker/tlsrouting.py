"""What TLS decides about a request before any site answers it (SPEC §6, §7).

Owns two answers: ``redirect_to_https`` (a request on a plain listener gets 308 to
``https://HOST[:PORT]TARGET``, except ACME http-01 challenges, which are served) and
the 421 for a request over TLS whose Host picks another site than its SNI name did
(RFC 9110 §15.5.20, RFC 9112 §3.2.2: a connection's certificate was chosen for one
site; another site's content must not ride on it). Must not read or send bytes: the
reader asks, and answers with the plan it gets. One ``is None`` when neither applies.
"""

from __future__ import annotations

from collections.abc import Callable

from forkserver.config import Config
from forkserver.http import Request
from forkserver.http.response import Plan
from forkserver.sites.hosts import SiteTable, site_name
from forkserver.worker.connection import Connection

ACME_CHALLENGE = "/.well-known/acme-challenge/"  # RFC 8555 §8.3: served over plain HTTP
REDIRECT_STATUS = 308  # RFC 9110 §15.4.9: the method and body stay as they were
MISDIRECTED = 421
HTTPS_PORT = 443

ErrorPlan = Callable[..., Plan]


def https_location(host: str, port: int | None, target: str) -> str | None:
    """``https://HOST[:PORT]TARGET`` for a request's Host, or None without one."""
    name = site_name(host)
    if not name:
        return None  # HTTP/1.0 without Host: there is nowhere to send the client
    authority = name if port in (None, HTTPS_PORT) else f"{name}:{port}"
    path = target if target.startswith("/") else "/"  # absolute-form: its host is in ``host``
    if not target.startswith("/") and "://" in target:
        rest = target.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return f"https://{authority}{path}"


class TlsRouting:
    """The reader's hook: a plan for the request, or None to go on as usual."""

    def __init__(self, config: Config, https_port: int | None, error_plan: ErrorPlan) -> None:
        self.redirect = config.redirect_to_https
        self.https_port = https_port
        self.error_plan = error_plan
        sites = getattr(config, "sites", ())
        self.sites: SiteTable[str] | None = SiteTable(
            [(site.names, site.names[0]) for site in sites],
            next((site.names[0] for site in sites if site.default), None),
        ) if sites else None

    @staticmethod
    def wanted(config: Config) -> bool:
        return config.redirect_to_https or bool(getattr(config, "sites", ()))

    def decide(self, connection: Connection, request: Request) -> Plan | None:
        tls = connection.tls
        head = request.method == "HEAD"
        if tls is None:
            if not self.redirect or request.path.startswith(ACME_CHALLENGE):
                return None
            location = https_location(request.host, self.https_port, request.target)
            if location is None:
                return None
            plan = self.error_plan(REDIRECT_STATUS, head=head)
            plan.headers.append(("Location", location))
            return plan
        picked = tls.sni_site
        if picked is None or self.sites is None:
            return None  # no SNI, or a name no site claims: Host alone picks the site
        claim = self.sites.find(request.host)
        if claim is not None and claim.site != picked:
            return self.error_plan(MISDIRECTED, head=head)
        return None
