"""Sites and rules (issue 17) against forkserver itself: what they cost when configured.

Owns four experiments, each a pair of forkservers taking turns round by round (as
bench/protection.py does), the medians compared:

- sites: the site mix (uniform) with 20 sites configured (19 decoys, exact and
  ``*.`` names; the requests name the 20th by Host) against none (target: within 5%);
- rules: the site mix with 50 rules (48 that never match, one header rule and one
  redirect that do for some paths) against none (target: within 10%);
- auth: 1 KiB keep-alive requests with the right password to a protected path
  against the same file unprotected (target: within 10%: one bcrypt check per worker
  and credentials, then a dictionary lookup);
- flood: one worker; six connections send wrong passwords (cost 10, a new password
  each time, so none is remembered) back to back while wrk fetches 1 KiB from four
  other connections; wrk's p99 latency (target: under 200 ms).

    .venv/bin/python -m bench.sites [--seconds 2] [--rounds 5] [--output-dir DIR]

Starts and stops its own servers; prints its figures and writes them as JSON.
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
from dataclasses import asdict, dataclass
from pathlib import Path

import bcrypt

from bench.docroot import SMALL_FILE, build_docroot
from bench.load import WRK_REPORT_SCRIPT, WRK_REQUEST_TIMEOUT_SECONDS, WrkResult, run_wrk_command
from bench.prerequisites import Programs
from bench.servers import FORKSERVER, RunningServer, StartContext, start_forkserver, start_server
from bench.sitecases import ALL_SITE_CASES, SITE_SCRIPT, SITE_UNIFORM, prepare_site
from bench.sitemix import default_store

HOST = "bench.example.org"
USER, PASSWORD = "bench", "right-password"
CONNECTIONS = 50
FLOOD_CONNECTIONS = 6
FLOOD_COST = 10
FLOOD_WRK_CONNECTIONS = 4
TARGETS = {"sites": 5.0, "rules": 10.0, "auth": 10.0}  # % fewer req/s at most
FLOOD_P99_TARGET_MS = 200.0
PROTECTED = "/protected/" + SMALL_FILE  # a copy of the 1 KiB file; the probe stays open


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
    plain_rounds: list[float]
    configured_rounds: list[float]

    @property
    def drop_percent(self) -> float:
        plain = statistics.median(self.plain_rounds)
        return (1 - statistics.median(self.configured_rounds) / plain) * 100


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


def in_turns(base: StartContext, name: str, configured_yaml: str, rounds: int,
             load: Callable[[RunningServer], WrkResult]) -> Pair:
    servers = [start(base, f"{name}-plain", ""), start(base, f"{name}-configured",
                                                          configured_yaml)]
    rates: list[list[float]] = [[], []]
    try:
        for _ in range(rounds):
            for index, server in enumerate(servers):
                outcome = load(server)
                if outcome.status_errors:
                    raise SitesBenchFailure(f"{name}: {outcome.status_errors} error statuses")
                rates[index].append(outcome.requests_per_second)
    finally:
        for server in servers:
            server.stop()
    return Pair(rates[0], rates[1])


def flood_p99(base: StartContext, htpasswd: Path, seconds: int) -> float:
    """wrk's p99 (ms) for an unprotected file while wrong passwords flood one worker."""
    server = start(base, "flood", protected(htpasswd, "/private/**"), workers=1)
    stop = threading.Event()
    sent = [0] * FLOOD_CONNECTIONS

    def flood(number: int) -> None:
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

    threads = [threading.Thread(target=flood, args=(n,), daemon=True)
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
    return outcome.latency_p99_seconds * 1000


def run(base: StartContext, seconds: int, rounds: int, store: Path) -> dict[str, object]:
    case = next(c for c in ALL_SITE_CASES if c.key == SITE_UNIFORM)
    prepare_site((case,), store, base.docroot, base.workdir)
    paths = str(case.paths_file(base.workdir))

    def site_mix(server: RunningServer) -> WrkResult:
        return wrk(base, server, "/", seconds, CONNECTIONS, [f"Host: {HOST}"], SITE_SCRIPT,
                   [paths])

    results: dict[str, object] = {}
    sites = in_turns(base, "sites", twenty_sites(), rounds, site_mix)
    print(f"bench: 20 sites: site mix {sites.drop_percent:+.1f}% fewer req/s than one site "
          f"(target < {TARGETS['sites']:g}%)", flush=True)
    rules = in_turns(base, "rules", fifty_rules(), rounds, site_mix)
    print(f"bench: 50 rules: site mix {rules.drop_percent:+.1f}% fewer req/s than none "
          f"(target < {TARGETS['rules']:g}%)", flush=True)
    htpasswd = base.workdir / "bench.htpasswd"
    htpasswd.write_text(f"{USER}:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(FLOOD_COST))
                        .decode() + "\n")

    def one_k(server: RunningServer) -> WrkResult:
        return wrk(base, server, PROTECTED, seconds, CONNECTIONS,
                   [f"Host: {HOST}", authorization(PASSWORD)])

    auth = in_turns(base, "auth", protected(htpasswd, "/protected/**"), rounds, one_k)
    print(f"bench: right password, keep-alive: {auth.drop_percent:+.1f}% fewer req/s than "
          f"unprotected (target < {TARGETS['auth']:g}%)", flush=True)
    p99 = flood_p99(base, htpasswd, seconds * 2)
    print(f"bench: wrong-password flood on one worker: another client's p99 {p99:.1f} ms "
          f"(target < {FLOOD_P99_TARGET_MS:g} ms)", flush=True)
    results.update(sites=asdict(sites), rules=asdict(rules), auth=asdict(auth),
                   flood_p99_ms=p99, drops_percent={"sites": sites.drop_percent,
                                                    "rules": rules.drop_percent,
                                                    "auth": auth.drop_percent})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sites", description=__doc__)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    wrk_path, nginx_path = shutil.which("wrk"), shutil.which("nginx") or "nginx"
    if wrk_path is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-sites-") as temporary:
        workdir = Path(temporary)
        workdir.chmod(0o755)  # as root the workers drop to nobody, who must reach the docroot
        docroot = workdir / "docroot"
        build_docroot(docroot)
        (docroot / "protected").mkdir()
        shutil.copy(docroot / SMALL_FILE, docroot / "protected" / SMALL_FILE)
        base = StartContext(workdir, docroot, args.workers, Programs(nginx_path, wrk_path),
                            repo, "/" + SMALL_FILE)
        results = run(base, args.seconds, args.rounds, default_store())
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "sites.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
