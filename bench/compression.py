"""Compression and validators (issue 19): on-the-fly gzip against its peers, and
``etag: content`` against ``etag: mtime`` on the site mix.

Owns two cases and their report section. ``gzip-fly``: a 100 KiB CSS file fetched
with ``Accept-Encoding: gzip`` from forkserver with ``compress.gzip`` (compressed once,
then from the per-worker cache), from the same forkserver as a ready-made ``.gz``
(``precompressed``), and from nginx with ``gzip on`` at the same level (it deflates
every response). ``etag-content``: the uniform site mix against forkserver started
with each ``etag`` mode. Every response is checked before the load (decoded bytes
equal the file). Starts and stops its own servers; measures req/s with wrk.
"""

from __future__ import annotations

import gzip
import http.client
import signal
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import (
    WRK_REPORT_SCRIPT,
    WRK_REQUEST_TIMEOUT_SECONDS,
    CaseOutcome,
    LoadFailure,
    run_wrk_command,
)
from bench.markdown import format_ratio, markdown_table
from bench.prerequisites import Programs
from bench.servers import (
    FORKSERVER,
    LOOPBACK,
    NGINX,
    NGINX_PROBLEMS,
    RunningServer,
    ServerStartError,
    StartContext,
    docroot_problems,
    free_loopback_port,
    launch,
    nginx_config,
    start_forkserver,
    start_server,
)
from bench.sitecases import ALL_SITE_CASES, SITE_UNIFORM, SiteLoad, SiteMeasurement, site_round
from bench.sitemix import prepare_tree, write_sequence

GZIP_FLY = "gzip-fly"
ETAG_CONTENT = "etag-content"
COMPRESSION_CASES = (GZIP_FLY, ETAG_CONTENT)
LEVEL = 6  # forkserver's default compress.level; nginx is set to the same
CSS_BYTES = 100 * 1024
FLY_FILE = "fly.css"  # no variant: compressed on the fly
STATIC_FILE = "static.css"  # the same bytes, with static.css.gz beside it
# Targets of issue 19.
FLY_VS_PRECOMPRESSED = 0.9
FLY_VS_NGINX = 2.0
CONTENT_VS_MTIME = 0.95
WARMUP_SECONDS = 2

ON_THE_FLY = "forkserver, gzip on the fly (cached)"
PRECOMPRESSED = "forkserver, precompressed .gz"
NGINX_GZIP = f"nginx, gzip on (level {LEVEL})"
ETAG_MTIME = "forkserver, etag: mtime"
ETAG_HASH = "forkserver, etag: content"

FLY_YAML = (
    f"compress:\n  gzip: true\n  level: {LEVEL}\n"
    "  types: [text/*, application/javascript, application/json, image/svg+xml]\n"
)


@dataclass
class CompressionRun:
    """req/s of every round by label, and what went wrong."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)

    def median(self, label: str) -> float | None:
        rounds = self.rates.get(label)
        return statistics.median(rounds) if rounds else None

    def ratio(self, label: str, base: str) -> float | None:
        value, reference = self.median(label), self.median(base)
        return value / reference if value is not None and reference else None


def stylesheet() -> bytes:
    """100 KiB of CSS that compresses like real CSS (~6:1), not like zeros."""
    rules: list[bytes] = []
    size = index = 0
    while size < CSS_BYTES:
        color = index * 2654435761 % 16**6
        rule = (f".component-{index} > .item-{index * 7 % 113} {{ color: #{color:06x};"
                f" margin: {index % 17}px {index % 5}px; padding: {index % 3}em; }}\n")
        rules.append(rule.encode())
        size += len(rules[-1])
        index += 1
    return b"".join(rules)[:CSS_BYTES]


def build_gzip_docroot(directory: Path) -> bytes:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    css = stylesheet()
    for name in (FLY_FILE, STATIC_FILE):
        (directory / name).write_bytes(css)
    (directory / (STATIC_FILE + ".gz")).write_bytes(gzip.compress(css, LEVEL, mtime=0))
    for path in directory.iterdir():
        path.chmod(0o644)
    return css


def nginx_gzip_starter(context: StartContext) -> RunningServer:
    """nginx configured as bench/servers.py does, plus ``gzip on`` for CSS at LEVEL."""
    port = free_loopback_port()
    config = nginx_config(context, port)
    plain = config.read_text()
    text = plain.replace(
        "    sendfile on;\n",
        f"    sendfile on;\n    gzip on;\n    gzip_comp_level {LEVEL};\n"
        "    gzip_types text/css;\n    gzip_vary on;\n",
    )
    if text == plain:
        raise ServerStartError("nginx.conf has no 'sendfile on;' line to add gzip after")
    config.write_text(text)
    log_paths = (context.workdir / "nginx-error.log", context.workdir / "nginx-stderr.log")
    command = [context.programs.nginx, "-p", str(context.workdir), "-c", str(config),
               "-e", str(log_paths[0])]
    process = launch(command, context.workdir, log_paths[1])
    return RunningServer(NGINX, f"{context.workers} workers, gzip on", process, port,
                         log_paths, NGINX_PROBLEMS, context.workers + 1,
                         stop_signal=signal.SIGQUIT)  # its graceful stop


def gzip_problem(server: RunningServer, path: str, css: bytes) -> str | None:
    """None when ``path`` comes back gzip-encoded and decodes to ``css``."""
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or response.getheader("Content-Encoding") != "gzip":
            return (f"GET {path}: status {response.status}, Content-Encoding "
                    f"{response.getheader('Content-Encoding')}")
        if gzip.decompress(body) != css:
            return f"GET {path}: decodes to other bytes"
        return None
    except (OSError, http.client.HTTPException, gzip.BadGzipFile) as error:
        return f"GET {path}: {type(error).__name__}: {error}"
    finally:
        connection.close()


def gzip_wrk(wrk: str, url: str, connections: int, seconds: int) -> CaseOutcome:
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s",
               f"--timeout={WRK_REQUEST_TIMEOUT_SECONDS}s", "-s", str(WRK_REPORT_SCRIPT),
               "-H", "Accept-Encoding: gzip", url]
    return run_wrk_command(command, seconds)


def record(run: CompressionRun, label: str, outcome: CaseOutcome) -> None:
    if isinstance(outcome, LoadFailure):
        run.incidents.append(f"{label}: {outcome.reason}")
        print(f"bench: {label}: FAILED: {outcome.reason}", flush=True)
        return
    errors = outcome.error_summary()
    if errors:
        run.incidents.append(f"{label}: {errors}")
    run.rates.setdefault(label, []).append(outcome.requests_per_second)
    print(f"bench: {label:<40} {outcome.requests_per_second:>10,.0f} req/s  "
          f"{errors or 'no errors'}", flush=True)


@dataclass(frozen=True)
class CompressionOptions:
    programs: Programs
    workdir: Path
    repo_root: Path
    site_store: Path
    workers: int
    connections: int
    seconds: int
    rounds: int
    cases: tuple[str, ...]


Starter = Callable[[StartContext], RunningServer]


def started(run: CompressionRun, options: CompressionOptions, name: str, label: str,
            docroot: Path, probe: str, starter: Starter) -> RunningServer | None:
    context = StartContext(options.workdir / label.replace(" ", "-").replace(",", ""),
                           docroot, options.workers, options.programs, options.repo_root,
                           probe)
    try:
        return start_server(name, context, starter)
    except (ServerStartError, OSError) as error:
        run.incidents.append(f"{label}: did not start: {error}")
        return None


def stop_all(run: CompressionRun, servers: list[tuple[str, RunningServer]]) -> None:
    for label, server in reversed(servers):
        outcome = server.stop()
        if outcome.killed or outcome.leftovers:
            run.incidents.append(f"{label}: stop: {outcome.describe()}")
        run.incidents.extend(f"{label}: {problem}" for problem in server.log_problems())


def run_gzip_case(run: CompressionRun, options: CompressionOptions) -> None:
    docroot = options.workdir / "gzip-docroot"
    css = build_gzip_docroot(docroot)
    servers: list[tuple[str, RunningServer]] = []
    try:
        fork = started(run, options, FORKSERVER, "forkserver gzip", docroot, "/" + FLY_FILE,
                       lambda context: start_forkserver(context, extra_yaml=FLY_YAML))
        if fork is not None:
            servers.append(("forkserver gzip", fork))
        peer = started(run, options, NGINX, "nginx gzip", docroot, "/" + FLY_FILE,
                       nginx_gzip_starter)
        if peer is not None:
            servers.append(("nginx gzip", peer))
        targets: list[tuple[str, RunningServer, str]] = []
        if fork is not None:
            targets += [(ON_THE_FLY, fork, FLY_FILE), (PRECOMPRESSED, fork, STATIC_FILE)]
        if peer is not None:
            targets.append((NGINX_GZIP, peer, FLY_FILE))
        for label, server, name in list(targets):
            problem = gzip_problem(server, "/" + name, css)
            if problem is not None:
                run.incidents.append(f"{label}: check failed: {problem}")
                targets.remove((label, server, name))
        for _label, server, name in targets:  # warm-up: the first request compresses
            gzip_wrk(options.programs.wrk, server.url("/" + name), options.connections,
                     min(options.seconds, WARMUP_SECONDS))
        for _ in range(options.rounds):
            for label, server, name in targets:
                record(run, label, gzip_wrk(options.programs.wrk, server.url("/" + name),
                                            options.connections, options.seconds))
    finally:
        stop_all(run, servers)


def etag_starter(mode: str) -> Starter:
    def start(context: StartContext) -> RunningServer:
        return start_forkserver(context, extra_yaml=f"etag: {mode}\n")

    return start


def run_etag_case(run: CompressionRun, options: CompressionOptions) -> None:
    case = next(case for case in ALL_SITE_CASES if case.key == SITE_UNIFORM)
    docroot = options.workdir / "etag-docroot"
    docroot.mkdir(parents=True, exist_ok=True)
    docroot.chmod(0o755)
    tree = prepare_tree(case.tree, options.site_store, docroot)
    write_sequence(tree, case.popularity, case.paths_file(options.workdir))
    samples = tree.sample()
    probe = next(iter(samples.values())).url_path
    servers: list[tuple[str, RunningServer]] = []
    try:
        for label, mode in ((ETAG_MTIME, "mtime"), (ETAG_HASH, "content")):
            server = started(run, options, FORKSERVER, label, docroot, probe,
                             etag_starter(mode))
            if server is None:
                continue
            problems = docroot_problems(server, samples)
            if problems:
                run.incidents.append(f"{label}: byte-exact check failed: {problems[:3]}")
                server.stop()
                continue
            servers.append((label, server))
        load = SiteLoad(options.programs.wrk, options.workdir, options.connections,
                        options.seconds, options.rounds, options.workers)
        # One unmeasured round each first: etag: content hashes every file once per
        # worker (what a deploy costs once), and the measured rounds compare the steady
        # state, as the other cases do after their warm-up.
        for _label, server in servers:
            site_round(load, case, server, SiteMeasurement())
        for _ in range(options.rounds):
            for label, server in servers:
                measurement = SiteMeasurement()
                site_round(load, case, server, measurement)
                outcome = measurement.rounds[-1]
                record(run, label, outcome)
    finally:
        stop_all(run, servers)


def run_compression(options: CompressionOptions) -> CompressionRun:
    run = CompressionRun()
    if GZIP_FLY in options.cases:
        run_gzip_case(run, options)
    if ETAG_CONTENT in options.cases:
        run_etag_case(run, options)
    return run


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value >= target else f"**not met** (gap {target - value:.2f})"


def compression_section(run: CompressionRun) -> list[str]:
    """The report's section: req/s by server and the three targets of issue 19."""
    rows = [[label, f"{median:,.0f}", str(len(run.rates[label]))]
            for label in (ON_THE_FLY, PRECOMPRESSED, NGINX_GZIP, ETAG_MTIME, ETAG_HASH)
            if (median := run.median(label)) is not None]
    fly_static = run.ratio(ON_THE_FLY, PRECOMPRESSED)
    fly_nginx = run.ratio(ON_THE_FLY, NGINX_GZIP)
    content = run.ratio(ETAG_HASH, ETAG_MTIME)
    targets = [
        ["on the fly / precompressed `.gz`", format_ratio(fly_static),
         f"≥ {FLY_VS_PRECOMPRESSED}", verdict(fly_static, FLY_VS_PRECOMPRESSED)],
        ["on the fly / nginx `gzip on`", format_ratio(fly_nginx), f"≥ {FLY_VS_NGINX}",
         verdict(fly_nginx, FLY_VS_NGINX)],
        ["site mix, `etag: content` / `etag: mtime`", format_ratio(content),
         f"≥ {CONTENT_VS_MTIME}", verdict(content, CONTENT_VS_MTIME)],
    ]
    lines = [
        "## Compression and validators (issue 19)", "",
        f"A {CSS_BYTES // 1024} KiB CSS file fetched with `Accept-Encoding: gzip`: "
        f"forkserver compressing it on the fly at level {LEVEL} (once per file version, "
        "then from each worker's cache), the same forkserver serving a ready-made `.gz` "
        f"of it, and nginx with `gzip on` at level {LEVEL} (it deflates every response). "
        "Then the uniform site mix against forkserver with `etag: mtime` and with "
        "`etag: content` (a BLAKE2b hash of each file, once per file version), after "
        "one unmeasured round each (the hashing a deploy costs once). Median of the "
        "rounds.", "",
        markdown_table(["server", "req/s", "rounds"], rows), "",
        markdown_table(["target", "ratio", "wanted", "verdict"], targets), "",
    ]
    if run.incidents:
        lines += ["Incidents:", "", *[f"- {incident}" for incident in run.incidents], ""]
    return lines
