"""Several sites on one server, and rules per path (SPEC §7, §8; issue 17).

``hosts`` picks a site from a normalized host name (and the SNI name), ``rules``
decides redirects, fallbacks, allow lists, passwords and headers per path,
``htpasswd`` reads bcrypt password files, ``auth`` checks Basic credentials and
remembers the answers. All of it is pure: the worker runs the slow bcrypt checks
off its loop (``forkserver.offload``).
"""

from forkserver.config.htpasswd import Htpasswd, HtpasswdError, parse_htpasswd, read_htpasswd
from forkserver.sites.auth import Guard, Pending, Verifier, basic_credentials
from forkserver.sites.hosts import Claim, SiteTable, site_name
from forkserver.sites.rules import NOTHING, Decision, Rules

__all__ = [
    "NOTHING",
    "Claim",
    "Decision",
    "Guard",
    "Htpasswd",
    "HtpasswdError",
    "Pending",
    "Rules",
    "SiteTable",
    "Verifier",
    "basic_credentials",
    "parse_htpasswd",
    "read_htpasswd",
    "site_name",
]
