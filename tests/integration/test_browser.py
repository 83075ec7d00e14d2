"""A real browser loads the sample site: headless Chromium driven over DevTools.

Chromium (Debian package ``chromium``; ``.ci/run`` installs it) runs with a fresh
profile, no network beyond 127.0.0.1 (every other host name resolves to nothing),
and the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3 carries
commands in, fd 4 results out, each a JSON message ending in NUL), so no debugging
port is opened either. The test asks the page itself, through the DOM and CSSOM:
the stylesheet applied (the body's computed background colour) and the script ran
(``#js-status`` reads "script loaded"). Then it reloads and reads the access log:
the reload revalidated the page, the stylesheet and the script with 304s.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, running, wait_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "chromium"
SITE_BACKGROUND = "rgb(247, 244, 236)"  # static/css/site.css: body { background-color: #f7f4ec }
SCRIPT_STATUS = "script loaded"  # static/js/site.js writes it into #js-status
CDP_TIMEOUT = 20.0  # per DevTools command; a cold Chromium start takes a few seconds
PAGE_TIMEOUT = 20.0
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--remote-debugging-pipe",
]


class DevTools:
    """The Chrome DevTools Protocol over the pipe pair (fds 3 and 4 in the browser)."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int):
        self.process = process
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.buffer = b""
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + CDP_TIMEOUT
        while True:
            reply = self.read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
            # Anything else is an event; none is needed here.

    def read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("Chromium did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self.from_browser, 1 << 16)
                if not chunk:
                    raise AssertionError(f"Chromium exited ({self.process.poll()})")
                self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate",
                           {"expression": expression, "returnByValue": True}, session)
        return result["result"].get("value")


def processes_mentioning(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (our private directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


@contextlib.contextmanager
def chromium(home: Path) -> Iterator[DevTools]:
    """A headless Chromium living entirely in ``home``; it and its helpers stop on exit.

    HOME and the XDG directories point into ``home`` too: the crash handler would
    otherwise keep its database in ~/.config, and runs detached in its own session,
    so its command line (which names ``home``) is how its pid is found.
    """
    assert shutil.which(CHROMIUM), "chromium is required (apt-get install chromium)"
    profile = home / "profile"
    profile.mkdir(parents=True)
    environment = {
        **os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data"),
    }
    commands_read, commands_write = os.pipe()
    results_read, results_write = os.pipe()

    def on_fds_3_and_4() -> None:  # in the child, before exec
        # Lift both ends above 4 first, so neither dup2 can clobber the other.
        commands = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
        results = fcntl.fcntl(results_write, fcntl.F_DUPFD, 10)
        os.dup2(commands, 3)
        os.dup2(results, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    process = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Every other descriptor of ours is close-on-exec already (PEP 446); closing
        # "all but pass_fds" would run after preexec_fn and needs 3 and 4 open here.
        preexec_fn=on_fds_3_and_4, close_fds=False, env=environment,
        start_new_session=True,  # its helper processes share one group, ours to stop
    )
    os.close(commands_read)
    os.close(results_write)
    devtools = DevTools(process, commands_write, results_read)
    try:
        yield devtools
    finally:
        with contextlib.suppress(AssertionError, OSError):
            devtools.call("Browser.close")
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # helpers left behind, if any
        os.close(commands_write)
        os.close(results_read)
        # The crash handlers notice the browser is gone and leave by themselves.
        try:
            wait_for(lambda: not processes_mentioning(str(home)), timeout=10,
                     what="Chromium's helper processes to exit")
        finally:
            for pid in processes_mentioning(str(home)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def open_page(devtools: DevTools, url: str) -> str:
    """Open ``url`` in a new tab and return the DevTools session attached to it."""
    target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session: str = devtools.call(
        "Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    devtools.call("Page.enable", session=session)
    devtools.call("Page.navigate", {"url": url}, session)
    return session


def page_state(devtools: DevTools, session: str) -> dict[str, Any] | None:
    """The page's state once it has loaded and its deferred script has run."""
    value = devtools.evaluate(session, """(() => {
        const status = document.getElementById("js-status");
        if (document.readyState !== "complete" || !status) return null;
        return {
            status: status.textContent,
            background: getComputedStyle(document.body).backgroundColor,
            jsClass: document.documentElement.classList.contains("js"),
            stylesheets: document.styleSheets.length,
            reloaded: window.__before_reload === undefined,
        };
    })()""")
    return value if isinstance(value, dict) else None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    # The repository's own sample site, as `make run` serves it, with the defaults
    # (Cache-Control: no-cache, so a browser revalidates every file it uses).
    with running(tmp_path, {"docroot": str(REPO / "static"), "workers": 2}) as started:
        yield started


def statuses(server: Server, after: int) -> list[tuple[str, int]]:
    found = []
    for line in server.access_log.splitlines()[after:]:
        match = re.search(r'"GET (\S+) HTTP/1.1" (\d{3}) .*HeadlessChrome', line)
        if match:
            found.append((match[1], int(match[2])))
    return found


def test_chromium_applies_the_sample_site_and_revalidates_with_304(
    server: Server, tmp_path: Path
) -> None:
    with chromium(tmp_path / "chromium") as devtools:
        session = open_page(devtools, server.url("/"))
        wait_for(
            lambda: (s := page_state(devtools, session)) is not None
            and s["status"] == SCRIPT_STATUS,
            timeout=PAGE_TIMEOUT, interval=0.1, what="the page to load and site.js to run",
        )
        state = page_state(devtools, session)
        assert state is not None
        assert state["background"] == SITE_BACKGROUND  # css/site.css applied
        assert state["jsClass"] is True  # js/site.js ran
        assert state["stylesheets"] >= 1

        wait_for(lambda: {"/", "/css/site.css", "/js/site.js"}
                 <= {path for path, status in statuses(server, 0) if status == 200},
                 what="the first visit in the access log")
        before = len(server.access_log.splitlines())

        devtools.evaluate(session, "window.__before_reload = 1")
        devtools.call("Page.reload", {"ignoreCache": False}, session)
        wait_for(
            lambda: (s := page_state(devtools, session)) is not None and s["reloaded"]
            and s["status"] == SCRIPT_STATUS,
            timeout=PAGE_TIMEOUT, interval=0.1, what="the reload",
        )
        state = page_state(devtools, session)
        assert state is not None and state["background"] == SITE_BACKGROUND

        # The reload asked with If-None-Match and got 304s, no bodies. (The icon is
        # left out: the first visit's favicon fetch may land in the log at any time.)
        checked = {"/", "/css/site.css", "/js/site.js"}
        wanted = {(path, 304) for path in checked}
        wait_for(lambda: wanted <= set(statuses(server, before)),
                 what=f"304s for {sorted(checked)} after the reload")
        assert not [hit for hit in statuses(server, before) if hit[0] in checked and hit[1] != 304]
