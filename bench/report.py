"""Turning one benchmark run into words: ``docs/benchmarks.md`` and the console.

Assembles the document from its parts: the result model (``bench/measured.py``), the
classic cases' tables (``bench/tables.py``), the targets and their verdicts
(``bench/targets.py``), the run's side notes and incidents (``bench/observations.py``),
the real-traffic section (``bench/site_report.py``); the chart is ``bench/chart.py``.
Owns the method prose and the list of optimizations. Runs nothing and measures nothing.
"""

from __future__ import annotations

from bench.compression import compression_section
from bench.https import https_section
from bench.markdown import markdown_table
from bench.measured import BenchmarkRun
from bench.observations import cpu_lines, extras_lines, incident_lines, interference_warning
from bench.protection import protection_section
from bench.site_report import site_console, site_section
from bench.sites_report import sites_section
from bench.tables import results_table, rounds_table, table_footnotes
from bench.targets import LIMIT_LINES, targets_table, verdicts

# Each optimization kept on the hot path, with the effect measured when it went in.
# "instructions" are user-space instructions per 1 KiB request counted by callgrind
# under bench/hotpath.py (a real worker over loopback; the count repeats exactly, so
# small changes are visible on a busy machine); req/s figures are `make bench --quick`
# runs on the same 2-core machine before and after.
OPTIMIZATION_LINES = [
    "- **EPOLLEXCLUSIVE on the listener, one accept per wake-up**: one idle worker wakes "
    "per connection. Accepting up to 64 per wake-up let one worker take whole bursts (50 "
    "connections split 51/1 in half the trials, halving throughput); with 1 they split "
    "evenly: 1 KiB keep-alive 29-38k req/s instead of 10-35k, `Connection: close` within "
    "3%.",
    "- **Open-file cache** (then: files ≤ 64 KiB in memory, 4 MiB per worker): head and "
    "body in one `send`, no open/fstat/sendfile/close: 1 KiB keep-alive 24k → 52k req/s, "
    "1 KiB close 9.2k → 13.4k, 64 KiB 17.7k → 23k.",
    "- **Cache entries trusted for 1 s** (like nginx's `open_file_cache_valid`) instead of "
    "a `stat` per hit, **field lines encoded once per entry**, and a **plain (not frozen) "
    "Request dataclass**: 109.5k → 72.8k instructions per 1 KiB keep-alive request.",
    "- **Cache-hit responses sent straight from `respond`** (no segment machinery), body "
    "joined into the head in one `join`: 72.8k → 70.2k instructions.",
    "- **Bare `_socket` objects from the C-level accept, TCP_NODELAY inherited from the "
    "listener**: 157.7k → 136.9k instructions per `Connection: close` request "
    "(client side included).",
    "- **Access-log fields escaped only when they need it** (one regex search instead of "
    "three `str.translate` calls): 95.4k → 84.5k instructions per logged request.",
    "- **A partial send keeps a memoryview of the rest** instead of a copy: 138.8k → 130.5k "
    "instructions per 64 KiB request.",
    "- **Access lines formatted in batches at flush time** (the worker only queues a tuple "
    "per response) and `enabled` a plain attribute instead of a property: 88.2k → 81.2k "
    "instructions per logged request; the measured drop with the access log on went from "
    "23% (`make bench --quick`) to 11% (3 rounds of 3 s).",
    "- **Files of 16 KiB to 1 MiB keep an open descriptor in the cache**, and a hit sends a "
    "dup of it with `sendfile` instead of copying the content into the socket: 64 KiB "
    "keep-alive 0.83-0.90x → 0.92-0.99x of nginx (`make bench --quick`, two runs each).",
    "- **The cached descriptor is lent, not duplicated**: the response sends from the "
    "cache entry's own descriptor and hands it back when done (an entry dropped meanwhile "
    "closes it then), saving a `dup` and a `close` of the six syscalls per hit: 64 KiB "
    "keep-alive CPU per request (`bench.hotpath --size 65536`, median of 7 rounds, twice) "
    "34.7 → 33.3 us and 36.7 → 35.0 us.",
    "- **Parsed heads remembered per worker** (`HeadParser`: up to 256 heads of at most "
    "2 KiB, byte-identical head → the same `Request`, one dict lookup instead of ~3.5 us "
    "of regex and dict building): 64.9k → 35.5k instructions per 1 KiB keep-alive "
    "request; `bench.hotpath` CPU per request 17.6-18.2 → 14.8-15.9 us (three runs each, "
    "alternating); 1 KiB keep-alive 76k → 92-95k req/s (0.98x → 1.27-1.36x of nginx, "
    "two full runs). Real traffic repeats heads (a client polling a URL, health checks, "
    "a CDN refilling); a stream of all-distinct heads pays one lookup and insert "
    "(~0.3 us) per request.",
    "- **Access lines: the request itself is queued, and a batch formats each repeated "
    "request shape once** (same request object, status and size → one escaped middle "
    "part), and **a regular log file takes a flush in one `write`** instead of 4 KiB "
    "chunks (13 vs 26 us per 256 lines; pipes keep `PIPE_BUF` chunks): 52.0k → 45.4k "
    "instructions per logged 1 KiB request, worker side 0.61 → 0.45 us per response. "
    "With the faster unlogged path, the measured drop had risen to 16% in one run; "
    "after these changes, four runs of the experiment (3 rounds each) gave -2 to 11%.",
    "- *Tried, not kept:* registering the listener again after each accept, so idle "
    "workers take turns (EPOLLEXCLUSIVE always wakes the first idle waiter in its queue). "
    "Six 2 s rounds each: one-sided splits fell from 3 to 1, but req/s moved within the "
    "noise (mean 79.0k → 81.5k), and on 2 cores shared with wrk the fastest rounds were "
    "lopsided ones (about 100:28 CPU ticks) anyway; it would cost two syscalls per accept.",
    "- **A miss opens its file with one `openat2`** (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS "
    "| RESOLVE_NO_MAGICLINKS` through `ctypes`; a symlink, ENOSYS or any error other than a "
    "plain ENOENT takes the contained walk, which decides as before) and **a directory's "
    "`.br`/`.zst`/`.gz` names are listed once per 1 s window** instead of a failing "
    "`faccessat` per suffix per request: server system calls per request in "
    "`bench.misspath` (the site-mix and cold trees, distinct heads, one worker in "
    "process, `strace -c`) 12.8 → 5.6 on the site mix (openat 3.2 → 0.8, close 3.2 → "
    "0.8, faccessat2 2.5 → 0) and 14.9 → 6.3 cold; CPU per request (client included, "
    "three alternating runs of 5 rounds of 8,000) 67.5-68.0 → 58.4-60.8 us on the site mix, "
    "65.5-69.5 → 57.5-66.5 us cold. Opening a file three directories down: walk "
    "9.6-10.5 us, `openat2` 3.5 us. User-space instructions (callgrind) rose 3-4% (the "
    "`ctypes` call costs more Python-side than three `os.open`; the kernel time it saves "
    "is not counted there).",
    "- **The open-file and parsed-head caches drop the least recently used entry when "
    "full** (the head cache used to empty itself, the file cache dropped the oldest "
    "inserted), and the file cache counts each entry's fields and ~1 KiB of overhead "
    "against its 4 MiB (at most 4,096 entries): Zipf site mix misses 45% → 39% "
    "(`openat2` per request 0.45 → 0.39); 1 KiB keep-alive (`bench.hotpath`, callgrind, "
    "PYTHONHASHSEED=0) 39,644 → 39,783 instructions per request. A hit reorders only "
    "when it is not the entry used last.",
    "- **The open-file cache covers a site's working set**: once its 4 MiB of contents "
    "are full, a small file is remembered by its open descriptor and encoded head (no "
    "content), up to 4,096 entries and descriptors per worker (at most a quarter of "
    "`RLIMIT_NOFILE`); a miss of a small file still answers from memory in one send. "
    "`bench.misspath` (one worker in process, distinct heads, 3 rounds of 8,000, CPU per "
    "request, client included): site mix uniform 68.5 → 43.0-45.2 us (hits 17% → most "
    "requests past the first second), Zipf 48.7 → 43.8-44.6 us, cold unchanged "
    "(60.3-62.1 → 60.2-61.5 us, every request a miss); cache size after the uniform mix "
    "2,990 entries, 2,160 descriptors, 7.6 MiB counted.",
    "- *Tried, not kept:* moving every hit to the end of both caches unconditionally "
    "(39,644 → 39,992 instructions per 1 KiB request, +0.9%) or through a method call "
    "(→ 40,562); and declaring `argtypes` plus `os.fsencode` on the `openat2` call "
    "(4.3-4.6 us per open instead of 3.5).",
    "- *Tried, not kept:* sending files over 16 KiB with the full path and `sendfile` "
    "(no cache): 64 KiB keep-alive fell to 0.65-0.70x of nginx.",
    "- **A distinct head's field block checked and split in one regex pass** (each match "
    "anchored at a line start by a lookbehind; as many matches as lines means every line "
    "is a whole field line, else the old checks name the status) and **common field "
    "names lower-cased through a dict**: `parse_request` of a browser's head 7.1 → "
    "5.4 us; `bench.misspath` site mix (uniform, distinct heads) 230.3k → 213.6k "
    "instructions per request (callgrind, client included), CPU 46.4 → 44.6 us median.",
    "- **A miss that the open-file cache keeps sends the entry's encoded field lines** "
    "(encoded once for the entry, not again by `respond`): `bench.misspath` cold "
    "282.5k → 271.8k instructions per request, site mix 215.5k → 210.7k; CPU cold "
    "62.3/66.3 → 60.9/65.4 us (two runs each, alternating).",
    "- **`Codings.select` asks the variant index once per file** (its directory's "
    "variant names, then a probe only for a name listed; an empty listing skips the "
    "loop) instead of `may_exist` once per suffix: `bench.misspath` cold 266.9k → "
    "254.1k instructions per request, site mix 209.0k → 204.7k; CPU within the noise "
    "of this shared machine (cold 67.0/61.6 → 68.1/60.0 us, two runs each).",
    "- *Tried, not kept:* listing a directory for the variant index only after it was "
    "asked 10 times within its 1 s window (probing file by file before): cold 252.1k → "
    "255.0k instructions per request and CPU 72.9/63.9 → 80.1/82.6 us (three failing "
    "`faccessat` per file for the first ten files of every directory cost more than one "
    "listing); site mix 201.6k → 201.2k, within the noise.",
    "- *Tried, not kept:* `StaticSite.plan` trying the open-file cache itself before the "
    "full order of decisions (one call level less on a hit): site mix 204.0k → 204.0k "
    "instructions per request; the cache hit already was that fast path.",
    "- **Least-recently-used caches on `OrderedDict`** (open-file cache, parsed heads, "
    "variant index, compression memo): evicting the oldest key of a plain dict walks "
    "past the dummies earlier deletions left at its front (`next(iter(d))` on a full "
    "4,096-entry dict: 2.1 us; `popitem(last=False)`: 0.2 us), and a hit's move to the "
    "end costs 0.08 us instead of 0.37 (pop and insert): `bench.misspath` cold, in "
    "steady state (12,000 requests of warm-up) 251.0k → 242.0k instructions per request; "
    "site mix unchanged (180.8k → 180.6k: it never evicts).",
    "- **An open-file cache entry past its second is renewed, not rebuilt**, when the "
    "file reopened through the contained walk is the same inode with the same size, "
    "mtime and ctime and no variant appeared (`static/freshness.py`: `openat2`, `fstat`, "
    "`close` instead of type, validators, Cache-Control, encoded fields and a read): "
    "`bench.misspath` site mix uniform in steady state (15,000 requests of warm-up, "
    "callgrind, client included) 198.9k → 177.8k instructions per request; with no "
    "entry ever expiring it costs 162.5k, so most of the window's price is gone.",
    "- **A full open-file cache admits a miss only on its second ask** (the last 2,048 "
    "paths turned away are remembered; while there is room every miss enters, as "
    "before; a file not kept is still answered in one `send` up to 16 KiB): a stream of "
    "one-time files no longer evicts reused entries, and skips building and evicting "
    "them. `bench.misspath` cold in steady state 243.6k → 157.3k instructions per "
    "request; site mix unchanged (177.3k → 177.2k, it never fills the cache); the cold "
    "case against a real server (2 workers, wrk, two alternating runs of 5 s) "
    "11.0k/11.5k → 15.6k/19.9k req/s, CPU 109/88 → 63/71 us per request.",
    "- **A field value runs to its CRLF with possessive quantifiers only, trailing OWS "
    "stripped in Python**, instead of a regex ending the value at its last visible byte "
    "(which gave back the whole tail of every value): findall and the field dict of a "
    "browser's head 3.2 → 2.5 us; `bench.misspath` site mix in steady state 176.5k → "
    "173.3k instructions per request; identical results to the old regex on 200,000 "
    "random values.",
    "- **`gc.freeze()` before each fork and once the worker is built**: a worker's "
    "collector no longer walks (and writes the GC headers of) what it inherited or "
    "built to serve, so those pages stay shared: peak PSS of master + 2 workers under the "
    "uniform site mix 60.8-61.0 → 57.4-57.8 MiB (two alternating runs each); "
    "instructions per request unchanged (179.1k → 179.0k).",
    "- **Date formatted once per second**, **`os.sendfile`** for files over 64 KiB in "
    "chunks of at most 2 MiB with the head sent `MSG_MORE`, and **access-log lines "
    "buffered** (flushed at 32 KiB, every second, on reopen and on exit, in whole-line "
    "writes): part of the design from the start, not measured separately.",
]

def render_markdown(run: BenchmarkRun, chart_name: str | None) -> str:
    cases = ", ".join(f"{case.title} ({case.connections} connections)" for case in run.cases)
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `{run.command}` on {run.started_at:%Y-%m-%d %H:%M %Z} in "
        f"{run.elapsed_seconds:.0f} s. Regenerate with `make bench`; this file and "
        "`benchmarks.png` are overwritten by every run, so do not edit them by hand.",
        "",
        *interference_warning(run),
        "## Machine",
        "",
        markdown_table(["", ""], [list(row) for row in run.machine.rows()],
                       left_aligned=(0, 1)),
        "",
        "## Method",
        "",
        "- Every server listens on 127.0.0.1 and serves the same temporary docroot of "
        "random files (1 KiB, 64 KiB, 10 MiB), checked byte-exact (sha256) before any load.",
        f"- Same worker count for all: {run.workers} (forkserver, nginx, gunicorn); "
        "`python -m http.server` is one process whatever the count.",
        f"- wrk, one thread, {run.rounds} round(s) of {run.seconds_per_case} s per case, after "
        f"a short warm-up: {cases}. Servers take turns within each round, so drift hits "
        "every server alike. Each round opens new connections; the tables show the median "
        "round, and every round is listed under *Rounds*.",
        "- Latency is wrk's p50 / p99 in the 1 KiB keep-alive case (a saturated server: "
        "queueing included).",
        "- Peak PSS is the largest sum of `Pss:` (`/proc/PID/smaps_rollup`) over the whole "
        "process tree (master + workers), sampled every 100 ms while the load runs.",
        "- The load generator shares the machine's CPUs with the server, so on a small "
        "machine every number is partly a measure of how little CPU a server needs.",
        "- The real-traffic cases (site mix, cold) are described in their own section.",
        "",
        "## Results",
        "",
        results_table(run),
        "",
        *(f"- {note}" for note in table_footnotes(run)),
        "",
        "## Targets (forkserver against nginx in the same run)",
        "",
        targets_table(run),
        "",
    ]
    if any(verdict.met is False for verdict in verdicts(run)):
        parts += ["## What limits the targets not met", "", *LIMIT_LINES, ""]
    if run.site is not None:
        parts += site_section(run.site)
    parts += feature_sections(run)
    parts += ["## forkserver against itself", "", *extras_lines(run), ""]
    parts += ["## Optimizations and their measured effect", "", *OPTIMIZATION_LINES, ""]
    parts += ["## Rounds", "", rounds_table(run), ""]
    parts += ["## CPU during the load", "",
              "Totals cover all cases and the warm-up; the split shows how evenly each "
              "server's workers shared the work in each round.", "", *cpu_lines(run), ""]
    incidents = incident_lines(run)
    parts += ["## Incidents", ""]
    parts += incidents or ["None: no server crashed, replaced a worker or logged a problem."]
    parts.append("")
    if chart_name:
        parts += ["## Chart", "", f"![Benchmark results]({chart_name})", ""]
    parts += [
        "## Running it",
        "",
        "`make bench` runs `python -m bench` (about seven minutes, half of it the real-traffic "
        "cases; the first run also generates their trees; installs nginx-light and "
        "wrk with apt-get and gunicorn and matplotlib with pip when they are missing). Flags:",
        "",
        "- `--quick`: one round of 2 s per case (about 40 s; noisier).",
        "- `--seconds N`, `--rounds N`: wrk duration and runs per case and server "
        "(default 2 s, 5 rounds; the median round is reported).",
        "- `--workers N`: workers for every server (default 2).",
        "- `--connections N`, `--large-file-connections N`: wrk connections "
        "(default 50 and 4).",
        "- `--servers forkserver,nginx`: a subset; this file is rewritten only when "
        "forkserver and nginx both ran.",
        "- `--no-write`: print the tables only; `--output-dir DIR`: write this file and "
        "the chart to DIR instead, whatever ran.",
        "- `--cases LIST`: only these cases (`1k-keepalive`, `1k-close`, `64k-keepalive`, "
        "`10m-throughput`, `site-mix-uniform`, `site-mix-zipf`, `cold`, `gzip-fly`, "
        "`etag-content`, `https`, `sites-20`, `rules-50`, `auth-keepalive`, `auth-flood`, "
        "`protection`; `classic`, `site-mix`, `compression`, `https`, `sites` and `all` "
        "stand for their groups), e.g. `--cases site-mix,cold` to iterate on the "
        "real-traffic cases; this file is rewritten only when every case ran, and "
        "forkserver's experiments against itself run only with `1k-keepalive`.",
        "- `--site-workers LIST`: worker counts for the real-traffic cases (default 1,2); "
        "counts other than `--workers` run forkserver and nginx only, in fewer rounds.",
        "- `--site-store DIR`: where the generated trees are kept between runs (default "
        "under the system's temporary directory; about 210 MiB).",
        "- `--wrk-cpus LIST`: run wrk under `taskset -c LIST` and the servers on the other "
        "CPUs (for machines with CPUs to spare; see *On a bigger machine*).",
        "- `--profile [CASE]`: run forkserver with one worker under py-spy for one case "
        "(`1k-keepalive` by default) and write a flamegraph to `bench/results/`.",
        "",
    ]
    return "\n".join(parts)


def render_console(run: BenchmarkRun) -> str:
    """What the terminal gets: the tables, footnotes and incidents, no method prose."""
    parts = ["", results_table(run), ""]
    parts += [f"- {note}" for note in table_footnotes(run)]
    parts += ["", "Every round:", "", rounds_table(run), ""]
    parts += ["", targets_table(run), "", *extras_lines(run), ""]
    parts += ["CPU during the load:", *cpu_lines(run), ""]
    parts += incident_lines(run) or ["No incidents."]
    if run.site is not None:
        parts += site_console(run.site)
    parts += feature_sections(run)
    return "\n".join(parts)


def feature_sections(run: BenchmarkRun) -> list[str]:
    """The sections of the optional case groups that ran, the same in both outputs."""
    parts: list[str] = []
    if run.compression is not None:
        parts += compression_section(run.compression)
    if run.https is not None:
        parts += https_section(run.https)
    if run.sites is not None:
        parts += sites_section(run.sites)
    if run.protection is not None:
        parts += protection_section(run.protection)
    return parts
