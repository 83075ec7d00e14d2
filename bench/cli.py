"""The benchmark's command line: flags → ``Options``, then a run or a profile.

Owns flag names, defaults and their validation; nothing else.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.compression import COMPRESSION_CASES
from bench.https import HTTPS_CASES
from bench.load import (
    LARGE_THROUGHPUT,
    MEDIUM_KEEPALIVE,
    SMALL_CLOSE,
    SMALL_KEEPALIVE,
    pin_wrk,
)
from bench.protection import PROTECTION_CASES
from bench.runner import Options, run_benchmark
from bench.servers import SERVER_STARTERS
from bench.sitecases import SITE_CASE_KEYS, SITE_MIX_CASES
from bench.sitemix import default_store
from bench.sites import SITES_CASES

DEFAULT_WORKERS = 2
DEFAULT_SECONDS = 2
QUICK_SECONDS = 2
# Each round opens new connections, and how they land on the workers varies from
# round to round (see docs/benchmarks.md). The median of five 2 s rounds swung less
# than the median of three 3 s rounds in the same time (10 MiB: 2.27-2.53 GB/s
# against 1.77-2.84 GB/s for the same code).
DEFAULT_ROUNDS = 5
QUICK_ROUNDS = 1
WARMUP_SECONDS = 1
DEFAULT_CONNECTIONS = 50
# Each 10 MiB response keeps a connection busy for a while; a few connections
# saturate loopback without turning the case into a queueing test.
DEFAULT_LARGE_FILE_CONNECTIONS = 4
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells do
PROFILE_CASES = (SMALL_KEEPALIVE, SMALL_CLOSE, MEDIUM_KEEPALIVE, LARGE_THROUGHPUT)
ALL_CASES = (*PROFILE_CASES, *SITE_CASE_KEYS, *COMPRESSION_CASES, *HTTPS_CASES, *SITES_CASES,
             *PROTECTION_CASES)
CASE_GROUPS = {"classic": PROFILE_CASES, "site-mix": SITE_MIX_CASES,
               "compression": COMPRESSION_CASES, "https": HTTPS_CASES, "sites": SITES_CASES,
               "all": ALL_CASES}
DEFAULT_SITE_WORKERS = (1, DEFAULT_WORKERS)


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so every ``finally`` stops its servers."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def server_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SERVER_STARTERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown server(s) {unknown}; choose from {', '.join(SERVER_STARTERS)}")
    return names


def case_list(text: str) -> tuple[str, ...]:
    chosen: set[str] = set()
    for name in (name.strip() for name in text.split(",") if name.strip()):
        if name in CASE_GROUPS:
            chosen.update(CASE_GROUPS[name])
        elif name in ALL_CASES:
            chosen.add(name)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown case {name!r}; choose from {', '.join(ALL_CASES)} or the groups "
                f"{', '.join(CASE_GROUPS)}")
    if not chosen:
        raise argparse.ArgumentTypeError("no case given")
    return tuple(case for case in ALL_CASES if case in chosen)


def number_list(text: str) -> tuple[int, ...]:
    return tuple(sorted({positive_int(part.strip()) for part in text.split(",")
                         if part.strip()}))


def cpu_list(text: str) -> tuple[int, ...]:
    try:
        cpus = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated CPU list: {text!r}") \
            from None
    if not cpus or any(cpu < 0 for cpu in cpus):
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r}")
    return cpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark forkserver against nginx, gunicorn and http.server with "
                    "wrk on 127.0.0.1; print a table and write docs/benchmarks.md.",
    )
    parser.add_argument("--workers", type=positive_int, default=DEFAULT_WORKERS,
                        help=f"worker processes per server (default {DEFAULT_WORKERS})")
    parser.add_argument("--seconds", type=positive_int, default=None,
                        help=f"wrk duration per case (default {DEFAULT_SECONDS}, "
                             f"{QUICK_SECONDS} with --quick)")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help=f"wrk runs per case and server, median reported (default "
                             f"{DEFAULT_ROUNDS}, {QUICK_ROUNDS} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} round of {QUICK_SECONDS} s per case: a fast, "
                             "noisier run")
    parser.add_argument("--connections", type=positive_int, default=DEFAULT_CONNECTIONS,
                        help=f"wrk connections for the 1 KiB and 64 KiB cases "
                             f"(default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--large-file-connections", type=positive_int,
                        default=DEFAULT_LARGE_FILE_CONNECTIONS,
                        help="wrk connections for the 10 MiB case "
                             f"(default {DEFAULT_LARGE_FILE_CONNECTIONS})")
    parser.add_argument("--servers", type=server_list, default=tuple(SERVER_STARTERS),
                        help=f"comma-separated subset of {','.join(SERVER_STARTERS)}; "
                             "docs/ is written only if forkserver and nginx both ran")
    parser.add_argument("--cases", type=case_list, default=ALL_CASES,
                        help=f"comma-separated subset of {','.join(ALL_CASES)}, or the "
                             f"groups {','.join(CASE_GROUPS)} (default all); docs/ is "
                             "written only when every case ran")
    parser.add_argument("--site-workers", type=number_list, default=DEFAULT_SITE_WORKERS,
                        help="worker counts for the site-mix and cold cases (default "
                             f"{','.join(map(str, DEFAULT_SITE_WORKERS))}); counts other "
                             "than --workers run forkserver and nginx only")
    parser.add_argument("--site-store", type=Path, default=default_store(),
                        help="where the generated site and cold trees are kept between "
                             f"runs (default {default_store()})")
    parser.add_argument("--wrk-cpus", type=cpu_list, default=None,
                        help="run wrk under taskset on these CPUs (e.g. 6,7) and the "
                             "servers on the others")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write benchmarks.md and .png to this directory instead of "
                             "docs/, even when only some cases or servers ran")
    parser.add_argument("--no-write", dest="write_docs", action="store_false",
                        help="print only; leave docs/benchmarks.md and .png alone")
    parser.add_argument("--profile", nargs="?", const=SMALL_KEEPALIVE, choices=PROFILE_CASES,
                        metavar="CASE",
                        help="instead of the benchmark, run forkserver with one worker under "
                             "py-spy for one case (default 1k-keepalive; also "
                             f"{', '.join(PROFILE_CASES[1:])}) and write a flamegraph SVG "
                             "to bench/results/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    options = Options(
        command=shlex.join(["python", "-m", "bench", *arguments]),
        workers=args.workers, seconds=seconds, rounds=rounds, warmup_seconds=WARMUP_SECONDS,
        connections=args.connections, large_file_connections=args.large_file_connections,
        servers=args.servers, write_docs=args.write_docs,
        cases=args.cases, all_cases=set(args.cases) == set(ALL_CASES),
        site_workers=args.site_workers, site_store=args.site_store,
        output_dir=args.output_dir,
    )
    if args.wrk_cpus:
        pin_wrk(args.wrk_cpus)
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        if args.profile:
            from bench.profiler import run_profile

            return run_profile(options, args.profile)
        return run_benchmark(options)
    except KeyboardInterrupt:
        print("bench: interrupted; every server it started was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("bench: terminated; every server it started was stopped", file=sys.stderr)
        return EXIT_TERMINATED
