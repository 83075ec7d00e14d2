"""HTTPS against nginx with the same certificate (issue 16): keep-alive, 10 MiB, handshakes.

Owns one experiment with its own pair of servers, taking turns round by round:
forkserver with one TLS listener and nginx with ``listen ... ssl``, both with the
same ECDSA P-256 certificate made here by ``openssl``, both TLS 1.3 only, both
encrypting in userspace (no kTLS on either side). Cases and targets:

- 1 KiB keep-alive over HTTPS (wrk, 50 connections): ≥ 0.8x nginx;
- 10 MiB over HTTPS (wrk, 4 connections): ≥ 0.7x;
- new TLS connections per second, one request each, without and with session
  resumption (``openssl s_time -new`` / ``-reuse``, several clients at once; wrk
  cannot resume): ≥ 0.7x.

Starts and stops its own servers; knows nothing of the report's layout beyond the
lines it returns.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.docroot import LARGE_FILE, SMALL_FILE, build_docroot
from bench.load import LoadCase, WrkResult, run_wrk
from bench.prerequisites import Programs, find_program
from bench.servers import (
    FORKSERVER,
    FORKSERVER_PROBLEMS,
    LOOPBACK,
    NGINX,
    NGINX_PROBLEMS,
    STARTUP_DEADLINE_SECONDS,
    STARTUP_POLL_SECONDS,
    RunningServer,
    ServerStartError,
    free_loopback_port,
    launch,
    log_tail,
    stop_unready,
)

HTTPS = "https"  # the case name for --cases
HTTPS_CASES = (HTTPS,)
KEEPALIVE = "1 KiB keep-alive over HTTPS"
LARGE = "10 MiB over HTTPS"
NEW = "new TLS connections"
RESUMED = "resumed TLS connections"
TARGETS = {KEEPALIVE: 0.8, LARGE: 0.7, NEW: 0.7, RESUMED: 0.7}
UNITS = {KEEPALIVE: "req/s", LARGE: "MiB/s", NEW: "conn/s", RESUMED: "conn/s"}
KEEPALIVE_CONNECTIONS = 50
LARGE_CONNECTIONS = 4
# s_time is one blocking client: several at once keep both workers busy.
S_TIME_CLIENTS = 4
S_TIME_EXTRA_SECONDS = 20  # guard against a hung s_time
S_TIME_TOTALS = re.compile(r"(\d+) connections in [\d.]+s;")
HTTPS_LISTENING = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")


@dataclass
class HttpsRounds:
    """Each case's headline numbers, one per round, for one server."""

    numbers: dict[str, list[float]] = field(default_factory=dict)
    resumed_share: list[float] = field(default_factory=list)  # s_time -reuse: share resumed
    problems: list[str] = field(default_factory=list)

    def add(self, case: str, value: float) -> None:
        self.numbers.setdefault(case, []).append(value)

    def median(self, case: str) -> float | None:
        values = self.numbers.get(case)
        return statistics.median(values) if values else None


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "bench-cert.pem", directory / "bench-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def start_https_forkserver(workdir: Path, docroot: Path, workers: int, cert: Path, key: Path
                           ) -> RunningServer:
    config = workdir / "forkserver-https.yaml"
    error_log = workdir / "forkserver-error.log"
    config.write_text(
        f"listen:\n  - address: '{LOOPBACK}:0'\n    tls: true\n"
        f"tls:\n  certificate: '{cert}'\n  key: '{key}'\n  min_version: TLSv1.3\n"
        f"docroot: '{docroot}'\nworkers: {workers}\naccess_log: null\n"
        f"error_log: '{error_log}'\nlog_level: info\n"
    )
    log_paths = (error_log, workdir / "forkserver-stderr.log")
    process = launch([sys.executable, "-m", "forkserver", "-c", str(config)], workdir,
                     log_paths[1])
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            for path in log_paths:
                try:
                    match = HTTPS_LISTENING.search(path.read_text(errors="replace"))
                except OSError:
                    continue
                if match and "workers serving" in path.read_text(errors="replace"):
                    return RunningServer(
                        FORKSERVER, f"{workers} workers, TLS 1.3 in userspace", process,
                        int(match.group(1)), log_paths, FORKSERVER_PROBLEMS, workers + 1,
                    )
            if process.poll() is not None:
                break
            time.sleep(STARTUP_POLL_SECONDS)
    except BaseException:
        stop_unready(process)
        raise
    stop_unready(process)
    raise ServerStartError(f"forkserver did not listen on https\n{log_tail(log_paths)}")


def start_https_nginx(nginx: str, workdir: Path, docroot: Path, workers: int, cert: Path,
                      key: Path) -> RunningServer:
    port = free_loopback_port()
    temp = "\n".join(f"    {kind}_temp_path {workdir / ('temp-' + kind)};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = workdir / "nginx-https.conf"
    config.write_text(f"""# Generated by bench/https.py.
worker_processes {workers};
daemon off;
pid {workdir / 'nginx.pid'};
error_log {workdir / 'nginx-error.log'};
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    access_log off;
    keepalive_requests 100000;
{temp}
    ssl_protocols TLSv1.3;
    ssl_session_tickets on;
    server {{
        listen {LOOPBACK}:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {docroot};
    }}
}}
""")
    log_paths = (workdir / "nginx-error.log", workdir / "nginx-stderr.log")
    process = launch([nginx, "-p", str(workdir), "-c", str(config), "-e", str(log_paths[0])],
                     workdir, log_paths[1])
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-brief"],
            input=b"", capture_output=True, check=False, timeout=10,
        )
        if probe.returncode == 0:
            # TERM is nginx's fast stop; QUIT its graceful one.
            return RunningServer(NGINX, f"{workers} workers, TLS 1.3 in userspace", process,
                                 port, log_paths, NGINX_PROBLEMS, workers + 1,
                                 stop_signal=signal.SIGQUIT)
        if process.poll() is not None:
            break
        time.sleep(STARTUP_POLL_SECONDS)
    stop_unready(process)
    raise ServerStartError(f"nginx did not listen on https\n{log_tail(log_paths)}")


def s_time(port: int, seconds: int, reuse: bool) -> tuple[float, float]:
    """(connections per second, share resumed) from S_TIME_CLIENTS clients at once."""
    command = ["openssl", "s_time", "-connect", f"{LOOPBACK}:{port}", "-www", f"/{SMALL_FILE}",
               "-time", str(seconds), "-reuse" if reuse else "-new"]
    started = time.monotonic()
    clients = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True)
               for _ in range(S_TIME_CLIENTS)]
    total = resumed = marks = 0
    for client in clients:
        try:
            output, _ = client.communicate(timeout=seconds + S_TIME_EXTRA_SECONDS)
        except subprocess.TimeoutExpired:
            client.kill()
            client.communicate()
            continue
        # One character per connection: '*' new, 'r' resumed (then the totals).
        counts = S_TIME_TOTALS.findall(output)
        total += int(counts[-1]) if counts else 0
        marks_only = "".join(line for line in output.splitlines()
                             if line and set(line) <= {"*", "r"})
        resumed += marks_only.count("r")
        marks += len(marks_only)
    wall = time.monotonic() - started
    return total / wall if wall else 0.0, resumed / marks if marks else 0.0


def headline(outcome: object, throughput: bool) -> float | None:
    if not isinstance(outcome, WrkResult) or outcome.socket_errors or outcome.status_errors:
        return None
    return outcome.mib_per_second if throughput else outcome.requests_per_second


def measure(server: RunningServer, wrk: str, seconds: int, rounds: HttpsRounds) -> None:
    base = f"https://{LOOPBACK}:{server.port}/"
    small = LoadCase("https-1k", KEEPALIVE, SMALL_FILE, KEEPALIVE_CONNECTIONS, False, False)
    large = LoadCase("https-10m", LARGE, LARGE_FILE, LARGE_CONNECTIONS, False, True)
    for case in (small, large):
        outcome = run_wrk(wrk, base + case.file_name, case, seconds)
        value = headline(outcome, case.measures_throughput)
        if value is None:
            rounds.problems.append(f"{server.name} {case.title}: {outcome}")
        else:
            rounds.add(case.title, value)
    rate, _ = s_time(server.port, seconds, reuse=False)
    rounds.add(NEW, rate)
    rate, share = s_time(server.port, seconds, reuse=True)
    rounds.add(RESUMED, rate)
    rounds.resumed_share.append(share)


def run_https(programs: Programs, workdir: Path, workers: int, seconds: int, rounds: int
              ) -> dict[str, HttpsRounds]:
    """Both servers, ``rounds`` turns each; every server stopped before returning."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # nginx's workers run as nobody and must reach the docroot
    docroot = workdir / "https-docroot"
    build_docroot(docroot)
    cert, key = make_certificate(workdir)
    results = {FORKSERVER: HttpsRounds(), NGINX: HttpsRounds()}
    for number in range(rounds):
        for name in (FORKSERVER, NGINX):
            serverdir = workdir / f"https-{name}-{number}"  # fresh logs: the port is read there
            serverdir.mkdir()
            if name == FORKSERVER:
                server = start_https_forkserver(serverdir, docroot, workers, cert, key)
            else:
                server = start_https_nginx(programs.nginx, serverdir, docroot, workers,
                                           cert, key)
            try:
                measure(server, programs.wrk, seconds, results[name])
            finally:
                server.stop()
                # The benchmark runs as root without user:, and forkserver says so.
                results[name].problems.extend(
                    line for line in server.log_problems()
                    if "started as root without user" not in line
                    and not line.endswith("1 problem line(s)"))
    return results


def https_section(results: dict[str, HttpsRounds]) -> list[str]:
    """The report's section (bench/report.py): the table and how it was measured."""
    return [
        "## HTTPS (issue 16)", "",
        "forkserver and nginx with the same ECDSA P-256 certificate, TLS 1.3 only, both "
        "encrypting in userspace, taking turns; wrk for keep-alive and 10 MiB, "
        f"{S_TIME_CLIENTS} `openssl s_time` clients at once for new connections "
        "(`-new`) and resumed ones (`-reuse`), one request each. Medians of the rounds.",
        "", *report_lines(results), "",
    ]


def report_lines(results: dict[str, HttpsRounds]) -> list[str]:
    """A markdown table: each case, both servers' medians, the ratio and its target."""
    ours, theirs = results[FORKSERVER], results[NGINX]
    lines = [
        "| HTTPS case | forkserver | nginx | ratio | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, target in TARGETS.items():
        a, b = ours.median(case), theirs.median(case)
        if a is None or b is None or not b:
            lines.append(f"| {case} | {a or 'n/a'} | {b or 'n/a'} | n/a | ≥ {target}x |")
            continue
        ratio = a / b
        verdict = "met" if ratio >= target else "**missed**"
        lines.append(f"| {case} ({UNITS[case]}) | {a:,.0f} | {b:,.0f} | {ratio:.2f}x "
                     f"| ≥ {target}x ({verdict}) |")
    for name, result in results.items():
        if result.resumed_share:
            lines.append(f"\n{name}: {statistics.median(result.resumed_share):.0%} of the "
                         "`s_time -reuse` connections resumed.")
        lines.extend(f"\n{name}: {problem}" for problem in result.problems[:5])
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="HTTPS: forkserver against nginx")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    nginx, wrk = find_program("nginx"), find_program("wrk")
    if nginx is None or wrk is None:
        print("bench.https: needs nginx and wrk (make bench installs them)")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-https-") as directory:
        results = run_https(Programs(nginx, wrk), Path(directory), args.workers,
                            args.seconds, args.rounds)
    print("\n".join(report_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
