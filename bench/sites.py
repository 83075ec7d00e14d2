"""Sites and rules (issue 17) against forkserver itself: what they cost when configured.

Owns four cases (group ``sites`` of ``make bench``), each but the last a pair of
forkservers taking turns round by round, the medians compared:

- sites-20: the site mix (uniform) with 20 sites configured (19 decoys, exact and
  ``*.`` names; the requests name the 20th by Host) against no ``sites:`` at all, the
  one site a plain configuration serves (target: within 5%);
- rules-50: the site mix with 50 rules (48 that never match, one header rule and one
  redirect that do for some paths) against none (target: within 10%);
- auth-keepalive: 1 KiB keep-alive requests with the right password to a protected
  path against the same file unprotected (target: within 10%: one bcrypt check per
  worker and credentials, then a dictionary lookup);
- auth-flood: one worker; six connections send wrong passwords (cost 10, a new
  password each time, so none is remembered) back to back while wrk fetches 1 KiB
  from four other connections; wrk's p99 latency (target: under 200 ms).

A difference of a few percent is smaller than the spread between rounds on a shared
2-core machine, so both servers of a pair run side by side, each gets one unmeasured
warm-up round, and then they alternate in twice as many rounds as asked, the order
swapped every round (A B, B A, ...) so neither always runs on the warmer CPU caches
or right after the other's load; the medians are compared (as bench/extras.py does
for the access log).

    .venv/bin/python -m bench.sites [--seconds 2] [--rounds 5] [--output-dir DIR]

Starts and stops its own servers; knows nothing of the report's layout
(bench/sites_report.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import statistics
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import bcrypt

from bench.docroot import SMALL_FILE, build_docroot
from bench.load import WRK_REPORT_SCRIPT, WRK_REQUEST_TIMEOUT_SECONDS, WrkResult, run_wrk_command
from bench.prerequisites import Programs
from bench.servers import (
    FORKSERVER,
    RunningServer,
    ServerStartError,
    StartContext,
    start_forkserver,
    start_server,
)
from bench.sitecases import ALL_SITE_CASES, SITE_SCRIPT, SITE_UNIFORM, prepare_site
from bench.sitemix import default_store

SITES_20 = "sites-20"
RULES_50 = "rules-50"
AUTH_KEEPALIVE = "auth-keepalive"
AUTH_FLOOD = "auth-flood"
SITES_CASES = (SITES_20, RULES_50, AUTH_KEEPALIVE, AUTH_FLOOD)
PAIRED_CASES = (SITES_20, RULES_50, AUTH_KEEPALIVE)
TITLES = {
    SITES_20: "site mix, 20 sites configured against no sites",
    RULES_50: "site mix, 50 rules against none",
    AUTH_KEEPALIVE: "1 KiB keep-alive, right password against unprotected",
}
HOST = "bench.example.org"
USER, PASSWORD = "bench", "right-password"
FLOOD_CONNECTIONS = 6
FLOOD_COST = 10
FLOOD_WRK_CONNECTIONS = 4
TARGETS = {SITES_20: 5.0, RULES_50: 10.0, AUTH_KEEPALIVE: 10.0}  # % fewer req/s at most
FLOOD_P99_TARGET_MS = 200.0
PROTECTED = "/protected/" + SMALL_FILE  # a copy of the 1 KiB file; the probe stays open
ROUNDS_PER_ASKED_ROUND = 2  # short rounds in turns: steadier medians (module docstring)
WARMUP_SECONDS = 1


class SitesBenchFailure(RuntimeError):
    """An experiment could not produce numbers; the message says why."""


def twenty_sites() -> str:
    lines = ["sites:"]
    for number in range(19):
        lines.append(f"  - names: [site{number}.example.com, '*.w{number}.example.com']")
    lines.append(f"  - names: [{HOST}]\n    default: true")
    return "\n".join(lines) + "\n"


def fifty_rules() -> str:
    lines = ["rules:"]
    for number in range(48):
        lines.append(f"  - match: '/never{number}/**'\n    headers: {{X-Never-{number}: '1'}}")
    lines.append("  - match: '*.html'\n    headers: {X-Html: '1'}")
    lines.append("  - match: '/old/**'\n    redirect: '/new/{rest}{query}'")
    return "\n".join(lines) + "\n"


def protected(htpasswd: Path, match: str = "/**") -> str:
    return (f"rules:\n  - match: '{match}'\n"
            f"    auth: {{realm: Bench, htpasswd: {json.dumps(str(htpasswd))}}}\n")


def authorization(password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()


@dataclass(frozen=True)
class Pair:
    """req/s of every measured round of the two servers of one case, in round order."""

    plain_rounds: list[float]
    configured_rounds: list[float]

    @property
    def plain(self) -> float:
        return statistics.median(self.plain_rounds)

    @property
    def configured(self) -> float:
        return statistics.median(self.configured_rounds)

    @property
    def drop_percent(self) -> float:
        return (1 - self.configured / self.plain) * 100


@dataclass
class SitesRun:
    """What the sites cases measured, and why any has no numbers."""

    pairs: dict[str, Pair] = field(default_factory=dict)  # by case key
    flood_p99_ms: float | None = None
    flood_wrong_passwords: int = 0  # 401s the flooding connections got meanwhile
    flood_requests: int = 0  # wrk's requests meanwhile
    incidents: list[str] = field(default_factory=list)

    def drop(self, key: str) -> float | None:
        pair = self.pairs.get(key)
        return None if pair is None else pair.drop_percent


@dataclass(frozen=True)
class SitesOptions:
    programs: Programs
    workdir: Path
    repo_root: Path
    site_store: Path
    workers: int
    connections: int
    seconds: int
    rounds: int
    cases: tuple[str, ...] = SITES_CASES


def context_for(base: StartContext, name: str, workers: int | None = None) -> StartContext:
    workdir = base.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    return StartContext(workdir, base.docroot, workers or base.workers, base.programs,
                        base.repo_root, base.probe_path)


def start(base: StartContext, name: str, extra_yaml: str, workers: int | None = None
          ) -> RunningServer:
    def starter(context: StartContext) -> RunningServer:
        return start_forkserver(context, extra_yaml=extra_yaml)
    return start_server(FORKSERVER, context_for(base, name, workers), starter)


def wrk(base: StartContext, server: RunningServer, path: str, seconds: int, connections: int,
        headers: Sequence[str] = (), script: Path = WRK_REPORT_SCRIPT,
        script_args: Sequence[str] = ()) -> WrkResult:
    command = [base.programs.wrk, "-t1", f"-c{connections}", f"-d{seconds}s",
               f"--timeout={WRK_REQUEST_TIMEOUT_SECONDS}s", "-s", str(script)]
    for header in headers:
        command += ["-H", header]
    command += [server.url(path)]
    if script_args:
        command += ["--", *script_args]
    outcome = run_wrk_command(command, seconds)
    if not isinstance(outcome, WrkResult):
        raise SitesBenchFailure(outcome.reason)
    return outcome


Load = Callable[[RunningServer, int], WrkResult]  # (server, seconds) → one round


def in_turns(base: StartContext, name: str, configured_yaml: str, rounds: int, seconds: int,
             load: Load) -> Pair:
    """Both servers side by side: a warm-up each, then ``rounds`` measured rounds each,
    alternating, the order swapped every round."""
    servers: list[RunningServer] = []
    rates: list[list[float]] = [[], []]
    try:
        servers.append(start(base, f"{name}-plain", ""))
        servers.append(start(base, f"{name}-configured", configured_yaml))
        for server in servers:
            load(server, min(seconds, WARMUP_SECONDS))
        for number in range(rounds):
            order = (0, 1) if number % 2 == 0 else (1, 0)
            for index in order:
                outcome = load(servers[index], seconds)
                if outcome.status_errors:
                    raise SitesBenchFailure(f"{name}: {outcome.status_errors} error statuses")
                rates[index].append(outcome.requests_per_second)
    finally:
        for server in servers:
            server.stop()
    return Pair(rates[0], rates[1])


def flood(base: StartContext, htpasswd: Path, seconds: int, run: SitesRun) -> None:
    """wrk's p99 (ms) for an unprotected file while wrong passwords flood one worker."""
    server = start(base, "flood", protected(htpasswd, "/private/**"), workers=1)
    stop = threading.Event()
    sent = [0] * FLOOD_CONNECTIONS

    def send_wrong(number: int) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            reader = sock.makefile("rb")
            while not stop.is_set():
                wrong = authorization(f"wrong-{number}-{sent[number]}")
                sock.sendall(f"GET /private/x HTTP/1.1\r\nHost: {HOST}\r\n{wrong}\r\n\r\n"
                             .encode())
                length = 0
                reader.readline()
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                sent[number] += 1

    threads = [threading.Thread(target=send_wrong, args=(n,), daemon=True)
               for n in range(FLOOD_CONNECTIONS)]
    try:
        for thread in threads:
            thread.start()
        outcome = wrk(base, server, "/" + SMALL_FILE, seconds, FLOOD_WRK_CONNECTIONS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    if sum(sent) < FLOOD_CONNECTIONS:
        raise SitesBenchFailure("the flood sent almost nothing")
    run.flood_p99_ms = outcome.latency_p99_seconds * 1000
    run.flood_wrong_passwords, run.flood_requests = sum(sent), outcome.requests


def build_sites_docroot(workdir: Path, store: Path) -> tuple[Path, Path]:
    """The classic files, a protected copy of the 1 KiB one and the uniform site mix's
    tree: the docroot, and the site mix's paths file."""
    docroot = workdir / "docroot"
    build_docroot(docroot)
    (docroot / "protected").mkdir(exist_ok=True)
    shutil.copy(docroot / SMALL_FILE, docroot / "protected" / SMALL_FILE)
    case = next(c for c in ALL_SITE_CASES if c.key == SITE_UNIFORM)
    prepare_site((case,), store, docroot, workdir)
    return docroot, case.paths_file(workdir)


def run_sites(options: SitesOptions) -> SitesRun:
    """The chosen cases; a case that fails is an incident, the others still run."""
    run = SitesRun()
    options.workdir.mkdir(parents=True, exist_ok=True)
    options.workdir.chmod(0o755)  # as root the workers drop to nobody, who must reach it
    docroot, paths = build_sites_docroot(options.workdir, options.site_store)
    base = StartContext(options.workdir, docroot, options.workers, options.programs,
                        options.repo_root, "/" + SMALL_FILE)
    rounds = options.rounds * ROUNDS_PER_ASKED_ROUND
    htpasswd = options.workdir / "bench.htpasswd"
    htpasswd.write_text(f"{USER}:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(FLOOD_COST))
                        .decode() + "\n")

    def site_mix(server: RunningServer, seconds: int) -> WrkResult:
        return wrk(base, server, "/", seconds, options.connections, [f"Host: {HOST}"],
                   SITE_SCRIPT, [str(paths)])

    def one_k(server: RunningServer, seconds: int) -> WrkResult:
        return wrk(base, server, PROTECTED, seconds, options.connections,
                   [f"Host: {HOST}", authorization(PASSWORD)])

    experiments: dict[str, tuple[str, Load]] = {
        SITES_20: (twenty_sites(), site_mix),
        RULES_50: (fifty_rules(), site_mix),
        AUTH_KEEPALIVE: (protected(htpasswd, "/protected/**"), one_k),
    }
    for key in PAIRED_CASES:
        if key not in options.cases:
            continue
        configured, load = experiments[key]
        try:
            pair = in_turns(base, key, configured, rounds, options.seconds, load)
        except (SitesBenchFailure, ServerStartError, OSError) as error:
            run.incidents.append(f"{key}: {error}")
            print(f"bench: {key}: FAILED: {error}", flush=True)
            continue
        run.pairs[key] = pair
        print(f"bench: {TITLES[key]}: {pair.configured:,.0f} against {pair.plain:,.0f} req/s, "
              f"{pair.drop_percent:+.1f}% (target < {TARGETS[key]:g}%)", flush=True)
    if AUTH_FLOOD in options.cases:
        try:
            flood(base, htpasswd, options.seconds * 2, run)
            print(f"bench: wrong-password flood on one worker: another client's p99 "
                  f"{run.flood_p99_ms:.1f} ms (target < {FLOOD_P99_TARGET_MS:g} ms)",
                  flush=True)
        except (SitesBenchFailure, ServerStartError, OSError) as error:
            run.incidents.append(f"{AUTH_FLOOD}: {error}")
            print(f"bench: {AUTH_FLOOD}: FAILED: {error}", flush=True)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sites", description=__doc__)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    wrk_path, nginx_path = shutil.which("wrk"), shutil.which("nginx") or "nginx"
    if wrk_path is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-sites-") as temporary:
        run = run_sites(SitesOptions(Programs(nginx_path, wrk_path), Path(temporary), repo,
                                     default_store(), args.workers, args.connections,
                                     args.seconds, args.rounds))
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "sites.json").write_text(json.dumps(asdict(run), indent=2) + "\n")
    return 1 if run.incidents else 0


if __name__ == "__main__":
    raise SystemExit(main())
