"""The status endpoint: the scoreboard as JSON or Prometheus text, for allowed clients.

Owns who may see it (``status.allow``), the choice of format (``?format=`` or
``Accept``) and both renderings. Any worker answers it from the shared scoreboard
(the master serves no HTTP); the worker hands over a request whose path is exactly
``status.path``. Must not send anything or touch sockets: request in, ``Plan`` out.

What the numbers mean (docs/operations.md, "Monitoring"):

* The ``worker`` label of the Prometheus series is the scoreboard slot, not a pid. A
  slot's counters add up every worker that ever ran in it: when a worker ends, the
  master folds its counts into the slot's retired totals, and a replacement in the
  same slot continues from there. So every counter only ever grows (until the master
  itself restarts), sums over slots never drop when a worker exits, and the number
  of series stays bounded by the slots in use instead of growing with every pid.
* The JSON ``workers`` list shows live workers with their own counts since they
  started; ``totals`` adds up everything, retired workers included.
* Counts come from each worker's last heartbeat (every 0.25 s), so another worker's
  numbers may be up to a quarter of a second behind; the answering worker's own are
  current, except for the status request itself, which counts once it is answered.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Protocol
from urllib.parse import parse_qsl

from forkserver.config import Config
from forkserver.http import Request
from forkserver.http.negotiate import prefers_plain_text
from forkserver.http.response import NOSNIFF, Plan, keeps_alive
from forkserver.scoreboard import (
    CODE_CLASSES,
    LIMITED,
    TLS_RESULTS,
    Scoreboard,
    SlotState,
    Snapshot,
)

# What a worker compares request paths with when the endpoint is off: a parsed path
# never holds a NUL (request targets are visible ASCII), so it never matches.
NO_STATUS_PATH = "\x00"
JSON_TYPE = "application/json"
# The Prometheus text exposition format, version 0.0.4.
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATES = {SlotState.BOOTING: "booting", SlotState.SERVING: "serving",
           SlotState.DRAINING: "draining"}
_FORMATS = ("json", "prometheus")


class ErrorPlanner(Protocol):
    """What the page asks of the worker's site (``StaticSite``): its answers for the
    methods it does not serve and its error pages (custom ones included), so a refused
    client cannot tell the status path from a missing file."""

    def plan(self, request: Request) -> Plan: ...

    def error_plan(self, status: int, *, head: bool = False) -> Plan: ...


class StatusPage:
    """Built once per worker; ``plan`` answers each request for ``status.path``."""

    def __init__(self, config: Config, site: ErrorPlanner, scoreboard: Scoreboard) -> None:
        self.site = site
        self.scoreboard = scoreboard
        self.allow = tuple(ipaddress.ip_network(network) for network in config.status.allow)
        self.extra = list(config.headers)
        self.quiet = not config.status.access_log

    def logged(self, request: Request, client: str) -> bool:
        """Whether this request for the status path gets an access-log line.

        ``status.access_log: false`` drops the answers a monitor gets (health checks
        every few seconds would bury the requests that matter); a refused client or
        method is still logged, since that is no monitor.
        """
        return not self.quiet or request.method not in ("GET", "HEAD") or not self.allowed(client)

    def allowed(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:  # not an IP address (a unix socket peer, "-"): never allowed
            return False
        return any(address in network for network in self.allow)

    def plan(self, request: Request, client: str, now: float) -> Plan:
        """The answer for ``status.path``; ``now`` is the worker's monotonic clock."""
        method = request.method
        if method not in ("GET", "HEAD"):
            return self.site.plan(request)  # 405 or 501, as for any other path
        head = method == "HEAD"
        if not self.allowed(client):
            result = self.site.error_plan(404, head=head)  # as if the path did not exist
        else:
            result = self.answer(request, head, now)
        if not keeps_alive(request, result):
            result.close = True  # e.g. a body that is never read (as the site does)
        return result

    def answer(self, request: Request, head: bool, now: float) -> Plan:
        wanted = [value for name, value in parse_qsl(request.query) if name == "format"]
        if wanted:
            if wanted[-1] not in _FORMATS:
                return self.site.error_plan(400, head=head)
            prometheus = wanted[-1] == "prometheus"
        else:
            prometheus = prefers_plain_text(request.headers.get("accept"))
        snapshot = self.scoreboard.snapshot()
        if prometheus:
            body, content_type = render_prometheus(snapshot).encode(), PROMETHEUS_TYPE
        else:
            body, content_type = render_json(snapshot, now).encode(), JSON_TYPE
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Vary", "Accept"),
            NOSNIFF,
            *self.extra,
        ]
        return Plan(200, headers, b"" if head else body)


def _by_class(counts: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(CODE_CLASSES, counts, strict=True))


def render_json(snapshot: Snapshot, monotonic_now: float) -> str:
    master = snapshot.master
    workers = []
    total_classes = [0] * len(CODE_CLASSES)
    total_bytes = 0
    limited = [0] * len(LIMITED)
    for slot in snapshot.slots:
        total_bytes += slot.retired_bytes_sent + slot.bytes_sent
        for index, (retired, live) in enumerate(
            zip(slot.retired_limited, slot.limited, strict=True)
        ):
            limited[index] += retired + live
        for index, (retired, live) in enumerate(
            zip(slot.retired_by_class, slot.by_class, strict=True)
        ):
            total_classes[index] += retired + live
        if slot.state == SlotState.FREE:
            continue
        workers.append({
            "slot": slot.index,
            "pid": slot.pid,
            "generation": slot.generation,
            "state": _STATES[slot.state],
            "started": round(slot.started, 3),
            "requests": slot.requests,
            "requests_by_class": _by_class(slot.by_class),
            "bytes_sent": slot.bytes_sent,
            "connections": slot.connections,
            "seconds_since_heartbeat": round(max(0.0, monotonic_now - slot.heartbeat), 3),
            "restarts": slot.restarts,
        })
    document = {
        "master_pid": master.pid,
        "start_time": round(master.start_time, 3),
        "uptime_seconds": round(max(0.0, time.time() - master.start_time), 3),
        "generation": master.generation,
        "workers_configured": master.workers_configured,
        "workers_wanted": master.workers_wanted,
        "workers": workers,
        "restarts": master.restarts,
        "totals": {
            "requests": sum(total_classes),
            "requests_by_class": _by_class(tuple(total_classes)),
            "bytes_sent": total_bytes,
            "limited": dict(zip(LIMITED, limited, strict=True)),
        },
    }
    return json.dumps(document, indent=2) + "\n"


class _Exposition:
    """Builds text in the Prometheus exposition format 0.0.4, one family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        text = ",".join(f'{key}="{_label_value(val)}"' for key, val in labels.items())
        self.lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(snapshot: Snapshot) -> str:
    master = snapshot.master
    out = _Exposition()
    out.family(
        "forkserver_requests_total", "counter",
        "Responses sent, by worker slot (its workers, past and present) and status class.",
    )
    for slot in snapshot.slots:
        for code_class, retired, current in zip(
            CODE_CLASSES, slot.retired_by_class, slot.by_class, strict=True
        ):
            out.sample("forkserver_requests_total", retired + current,
                       worker=str(slot.index), code_class=code_class)
    out.family(
        "forkserver_bytes_sent_total", "counter",
        "Bytes sent to clients (heads and bodies), by worker slot.",
    )
    for slot in snapshot.slots:
        out.sample("forkserver_bytes_sent_total", slot.retired_bytes_sent + slot.bytes_sent,
                   worker=str(slot.index))
    running = [slot for slot in snapshot.slots if slot.state != SlotState.FREE]
    out.family("forkserver_connections_open", "gauge",
               "Client connections open, by live worker slot.")
    for slot in running:
        out.sample("forkserver_connections_open", slot.connections, worker=str(slot.index))
    out.family("forkserver_worker_info", "gauge",
               "Which process runs in each live worker slot (always 1).")
    for slot in running:
        out.sample("forkserver_worker_info", 1, worker=str(slot.index), pid=str(slot.pid),
                   generation=str(slot.generation))
    out.family("forkserver_workers", "gauge", "Worker processes, by state.")
    for state, name in _STATES.items():
        out.sample("forkserver_workers", sum(1 for s in running if s.state == state), state=name)
    out.family("forkserver_workers_configured", "gauge",
               "Workers the configuration asks for (the workers key).")
    out.sample("forkserver_workers_configured", master.workers_configured)
    out.family("forkserver_limited_total", "counter",
               "Per-client protection: refusals by the limit (connections: 503, requests: "
               "429, min_send_rate: reset), and untracked: clients served without limits "
               "because the client table had no room.")
    for index, name in enumerate(LIMITED):
        out.sample("forkserver_limited_total",
                   sum(s.retired_limited[index] + s.limited[index] for s in snapshot.slots),
                   limit=name)
    out.family("forkserver_tls_handshakes_total", "counter",
               "TLS handshakes on the TLS listeners, by result: ok, or failed (garbage, "
               "a refused version, EOF or the timeouts.header deadline before the end).")
    for index, name in enumerate(TLS_RESULTS):
        out.sample("forkserver_tls_handshakes_total",
                   sum(s.retired_tls[index] + s.tls[index] for s in snapshot.slots),
                   result=name)
    out.family("forkserver_worker_restarts_total", "counter",
               "Workers that ended and made way for a replacement, by reason.")
    for reason, count in master.restarts.items():
        out.sample("forkserver_worker_restarts_total", count, reason=reason)
    out.family("forkserver_generation", "gauge",
               "The current generation of workers (1 at start, one more per reload).")
    out.sample("forkserver_generation", master.generation)
    out.family("forkserver_start_time_seconds", "gauge",
               "When the master started, in seconds since the Unix epoch.")
    out.sample("forkserver_start_time_seconds", round(master.start_time, 3))
    return out.text()
