"""The configuration's values: frozen dataclasses and the bounds of each setting.

Owns what a loaded configuration is (Config, Timeouts, Limits, Status) and the named
limits the checks enforce. Must not read files, YAML or the live system.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forkserver.capacity import MAX_WORKERS as _MAX_WORKERS
from forkserver.config.htpasswd import Htpasswd
from forkserver.encoding.settings import CompressSettings


@dataclass(frozen=True, slots=True)
class Timeouts:
    header: float = 10.0  # whole request head must arrive within this
    keepalive: float = 15.0  # idle time allowed between requests
    send: float = 60.0  # a response may make no progress for this long
    graceful: float = 30.0  # drain time for a graceful stop or a reload
    worker: float = 30.0  # a worker silent this long is killed and replaced


@dataclass(frozen=True, slots=True)
class Limits:
    request_line: int = 8190  # longer → 414 (Apache's LimitRequestLine default)
    header_bytes: int = 16384  # larger head → 431
    headers: int = 100  # more fields → 431
    # Protection (SPEC §9, forkserver/protect/): per client address, across workers.
    connections_per_client: int = 0  # open connections; 0 = off (extra: 503, closed)
    requests_per_second: float = 0.0  # token bucket refill; 0 = off (over: 429)
    burst: int = 0  # extra requests at once: the bucket holds burst + 1
    exempt: tuple[str, ...] = ()  # client networks no per-client limit applies to
    min_send_rate: int = 0  # bytes/s over a sliding 10 s window; 0 = off (slower: reset)


@dataclass(frozen=True, slots=True)
class Status:
    path: str | None = None  # the status endpoint's URL path; None = off
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # client networks, normalized
    access_log: bool = True  # false: answers to allowed clients leave no access-log line


# -- sites and rules (SPEC §7, §8; forkserver/sites/ compiles them) -------------------


@dataclass(frozen=True, slots=True)
class AuthSetting:
    """``auth: {realm: Staff, htpasswd: conf/staff.htpasswd}``; the path made absolute."""

    realm: str
    htpasswd: str
    # The file's users, read at load (config/layers.py), so a reload is all-or-nothing.
    users: Htpasswd | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class RuleSetting:
    """One entry of ``rules:``, in the order written."""

    match: str  # a glob in the cache_control syntax
    redirect: str | None = None  # a template (config/redirects.py)
    status: int = 301  # of the redirect
    fallback: str | None = None  # a URL path in the docroot, percent-encoded
    allow: tuple[str, ...] | None = None  # networks, as ipaddress writes them
    auth: AuthSetting | None = None
    headers: tuple[tuple[str, str], ...] = ()
    line: int = 0  # where the rule starts in its file, for messages at load


@dataclass(frozen=True, slots=True)
class SiteSetting:
    """One entry of ``sites:`` (SPEC §7): its names and what it sets itself.

    ``overrides`` are Config fields (``docroot``, ``autoindex``, ``tls``, …) with their
    checked values; every other static-file key is inherited whole from the top level.
    """

    names: tuple[str, ...]  # normalized (config/sites.py config_name), "*." wildcards kept
    default: bool = False
    overrides: tuple[tuple[str, object], ...] = ()  # its own rules are ("rules", (…))
    line: int = 0


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """``tls:``: one certificate, a PEM chain (leaf first) and its unencrypted PEM key."""

    certificate: str | None = None  # absolute after loading
    key: str | None = None
    min_version: str = "TLSv1.2"  # or TLSv1.3 (config/listen.py MIN_VERSIONS)


@dataclass(frozen=True, slots=True)
class ListenEntry:
    """One entry of ``listen:``: ``host`` is an address, a host name or ``unix:/path``."""

    host: str
    port: int  # 0 for a unix socket (and for "pick a free port" on TCP)
    tls: bool = False

    @property
    def is_unix(self) -> bool:
        return self.host.startswith(UNIX_PREFIX)

    def url(self, port: int | None = None) -> str:
        """``https://ADDR:PORT`` as logged (``port``: the real one after binding :0)."""
        if self.is_unix:
            return ("https+" if self.tls else "http+") + self.host
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port if port is None else port}"


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"  # or "unix:/absolute/path" for a unix domain socket
    port: int = 8080
    socket_mode: str | None = None  # octal text such as "0660"; unix sockets only
    socket_owner: str | None = None  # "user", "user:group" or ":group"; unix sockets only
    docroot: str = "."  # absolute after loading
    workers: int = 1  # resolved: ``auto`` becomes the usable CPU count at load time
    backlog: int = 1024
    daemon: bool = False
    pidfile: str | None = None  # absolute after loading
    user: str | None = None
    group: str | None = None
    access_log: str | None = "-"  # "-" = stderr, None = off, else an absolute path
    error_log: str = "-"  # "-" = stderr, else an absolute path
    log_level: str = "info"
    access_log_format: str = "combined"  # combined, common or json
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_requests: int = 0
    max_requests_jitter: int = 0
    worker_memory_limit: int | None = None  # resident bytes; above → replaced (SPEC §9)
    limits: Limits = field(default_factory=Limits)
    # Static files (docs/http.md). Mappings are kept as tuples of pairs, in file order.
    precompressed: bool = True  # serve X.br / X.zst / X.gz when the client accepts them
    compress: CompressSettings = field(default_factory=CompressSettings)  # gzip on the fly
    etag: str = "mtime"  # or "content": a hash of the bytes (forkserver/encoding/etags.py)
    cache_control: tuple[tuple[str, str | None], ...] = (("*", "no-cache"),)  # glob → value
    headers: tuple[tuple[str, str], ...] = ()  # added to every response
    mime_types: tuple[tuple[str, str], ...] = ()  # extension (lower case, no dot) → type
    server_tokens: bool = False  # Server: forkserver/VERSION instead of forkserver
    autoindex: bool = False  # list a directory that has no index.html
    error_pages: tuple[tuple[int, str], ...] = ()  # status → path in the docroot
    status: Status = field(default_factory=Status)
    # PROXY protocol (forkserver/proxy.py): every connection starts with a header,
    # accepted only from these networks (normalized CIDR text).
    proxy_protocol: bool = False
    proxy_protocol_from: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # Sites and rules (SPEC §7, §8): without sites, the top-level keys are the one site.
    rules: tuple[RuleSetting, ...] = ()
    sites: tuple[SiteSetting, ...] = ()
    # Listeners and HTTPS (SPEC §6; config/listen.py, forkserver/tls). ``listen`` empty:
    # host and port name the one plain listener.
    listen: tuple[ListenEntry, ...] = ()
    tls: TlsSettings = field(default_factory=TlsSettings)
    redirect_to_https: bool = False
    source: str | None = None  # absolute path of the YAML file, None without -c


# -- bounds, each with its reason ---------------------------------------------------

# Half the scoreboard's slots, so a reload can run two full generations side by side:
# capacity.py is the one source (the master's TTIN cap reads it too).
MAX_WORKERS = _MAX_WORKERS
# listen(2) takes a C int; the kernel silently caps it at net.core.somaxconn anyway.
MAX_BACKLOG = 2**31 - 1
# Deadlines become epoll timeouts in milliseconds (a C int: about 24 days); a day is
# already far beyond any sensible timeout, so anything longer is surely a typo.
MAX_SECONDS = 86_400.0
# "GET / HTTP/1.1" alone is 14 bytes; 64 still serves short paths while refusing a
# limit so small that nearly every request would get a 414.
MIN_REQUEST_LINE = 64
# A whole head must hold a request line, a Host field and a few ordinary fields.
MIN_HEADER_BYTES = 256
# Every buffer a worker keeps per connection is bounded by these; beyond 1 MiB a slow
# client could pin a lot of memory per connection.
MAX_HEAD_BYTES = 1_048_576
# HTTP/1.1 requires Host, so at least one field must be allowed.
MIN_HEADERS = 1
MAX_HEADERS = 10_000
LOG_LEVELS = ("debug", "info", "warning", "error")
ACCESS_LOG_FORMATS = ("combined", "common", "json")
UNIX_PREFIX = "unix:"  # host: "unix:/run/forkserver/http.sock"
# sockaddr_un.sun_path holds 108 bytes, the last one a NUL.
MAX_UNIX_PATH = 107
