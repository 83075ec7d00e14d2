"""Several forkserver hosts behind HAProxy (docs/scaling.md), on loopback ports.

HAProxy (Debian's package, installed by ``.ci/run``) runs in the foreground with the
configuration printed in docs/scaling.md, rewritten only for loopback addresses, a
temporary stats socket and fast checks; two forkserver instances stand in for two
hosts. HAProxy is a hard requirement: a missing binary fails, it never skips.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.load import LoadResult, run_load
from tests.support import Server, alive, status_of, wait_for

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"
RELEASE_ONE = {"/index.html": b"<h1>one</h1>\n", "/a.txt": b"alpha one\n" * 50,
               "/b.css": b"body{color:red}\n" * 400, "/c.bin": os.urandom(150_000)}
RELEASE_TWO = {"/index.html": b"<h1>two</h1>\n", "/a.txt": b"alpha two\n" * 60,
               "/b.css": b"body{color:blue}\n" * 300, "/c.bin": os.urandom(120_000)}
LOADED_PATHS = ["/a.txt", "/b.css", "/c.bin"]


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert os.access(found, os.X_OK), "haproxy is not installed (.ci/run installs it)"
    return found


def documented_config() -> str:
    """The ```haproxy block of docs/scaling.md."""
    match = re.search(r"```haproxy\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match, "docs/scaling.md has no haproxy configuration block"
    return match.group(1)


def haproxy_config(port: int, backends: list[int], stats: Path) -> str:
    """The documented configuration, pointed at loopback ports, with fast checks."""
    text = documented_config()
    changes = {
        # Foreground, as the test's user, logging to stderr.
        "    log /dev/log local0\n": "    log stderr format raw local0 info\n",
        "    chroot /var/lib/haproxy\n": "",
        "    user haproxy\n": "",
        "    group haproxy\n": "",
        "    daemon\n": "",
        "/run/haproxy/admin.sock mode 660": f"{stats} mode 600",
        "    bind :80\n": f"    bind 127.0.0.1:{port}\n",
        "    bind :::80 v6only\n": f"    bind ::1:{port} v6only\n",
        "check inter 2s fall 3 rise 2": "check inter 200ms fall 2 rise 1",
        "server web1 10.0.1.11:8080": f"server web1 127.0.0.1:{backends[0]}",
        "server web2 10.0.1.12:8080": f"server web2 127.0.0.1:{backends[1]}",
    }
    for old, new in changes.items():
        assert text.count(old) == 1, f"docs/scaling.md no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def free_port() -> int:
    """A port free on both 127.0.0.1 and ::1 (HAProxy binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket(socket.AF_INET6) as probe6:
            try:
                probe6.bind(("::1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


@dataclass
class HAProxy:
    port: int
    stats: Path
    process: subprocess.Popen[bytes]
    output: Path

    def states(self) -> dict[str, str]:
        """Server name → status (UP, DOWN, …) from the stats socket's ``show stat``."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(self.stats))
                sock.sendall(b"show stat\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError:
            return {}
        rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "forkservers"}

    def wait_state(self, server: str, state: str, timeout: float = 20.0) -> None:
        wait_for(lambda: self.states().get(server, "").startswith(state), timeout=timeout,
                 interval=0.05, what=f"HAProxy marking {server} {state}: {self.states()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_haproxy(directory: Path, backends: list[int]) -> HAProxy:
    port = free_port()
    stats = directory / "haproxy.sock"
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(port, backends, stats))
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(config)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    output = directory / "haproxy.log"
    with open(output, "wb") as log:
        process = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return HAProxy(port, stats, process, output)


def write_release(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, content in files.items():
        (path / name.lstrip("/")).write_bytes(content)
    return path


def switch_symlink(link: Path, target: str) -> None:
    """``ln -sfn TARGET LINK.new && mv -T LINK.new LINK``: an atomic switch."""
    temporary = link.with_name(link.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)
    os.replace(temporary, link)


def instance_settings(docroot: Path) -> dict[str, Any]:
    # HAProxy's health checks ask for the status endpoint (docs/scaling.md).
    return {
        "docroot": str(docroot), "workers": 2, "log_level": "info",
        "proxy_protocol": True, "proxy_protocol_from": ["127.0.0.1/32"],
        "status": {"path": "/server-status", "allow": ["127.0.0.1/32"]},
    }


@dataclass
class Cluster:
    haproxy: HAProxy
    hosts: list[Server]
    current: Path  # the docroot symlink both hosts serve


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    site = tmp_path / "site"
    write_release(site / "releases" / "one", RELEASE_ONE)
    write_release(site / "releases" / "two", RELEASE_TWO)
    current = site / "current"
    switch_symlink(current, "releases/one")
    hosts = []
    haproxy: HAProxy | None = None
    try:
        for name in ("web1", "web2"):
            (tmp_path / name).mkdir()
            hosts.append(Server(tmp_path / name, instance_settings(current), []).start())
        haproxy = start_haproxy(tmp_path, [host.port for host in hosts])
        haproxy.wait_state("web1", "UP")
        haproxy.wait_state("web2", "UP")
        yield Cluster(haproxy, hosts, current)
    finally:
        if haproxy is not None:
            haproxy.stop()
        for host in hosts:
            host.stop()


def load_in_background(port: int, files: list[dict[str, bytes]], seconds: float
                       ) -> tuple[threading.Thread, LoadResult]:
    """Start the load; the result is live (watch ``requests`` grow), complete after join."""
    def expect(path: str, status: int, body: bytes) -> bool:
        return status == 200 and any(body == release[path] for release in files)

    result = LoadResult()
    thread = threading.Thread(target=lambda: run_load(
        port, LOADED_PATHS, expect, seconds=seconds, keepalive_clients=3, fresh_clients=2,
        result=result))
    thread.start()
    return thread, result


def wait_answered(result: LoadResult, more: int, what: str) -> None:
    """Wait until the load has had ``more`` requests answered from now on."""
    target = result.requests + more
    wait_for(lambda: result.requests >= target, timeout=15, what=what)


def access_lines(host: Server, marker: str) -> list[str]:
    return [line for line in host.access_log.splitlines() if marker in line]


def fetch_over_ipv6(port: int, path: str) -> bytes:
    with socket.create_connection(("::1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_dead_host_is_taken_out_and_no_request_fails_after(cluster: Cluster) -> None:
    web1, web2 = cluster.hosts
    thread, during = load_in_background(cluster.haproxy.port, [RELEASE_ONE], seconds=6)
    # The load reaches both hosts first (their access lines come within a flush).
    wait_for(lambda: all(access_lines(host, "GET /a.txt") for host in (web1, web2)),
             timeout=15, what="the load on both hosts")
    workers = web2.workers()
    assert workers
    web2.signal(signal.SIGKILL)  # the whole "host" dies: its master, without warning
    # The workers notice the master is gone, drain for at most a second, and exit.
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=15,
             what="web2's workers exiting after their master died")
    cluster.haproxy.wait_state("web2", "DOWN")
    assert cluster.haproxy.states()["web1"].startswith("UP")
    thread.join(timeout=60)
    assert not thread.is_alive(), "the load did not finish"
    assert during.requests > 100, during.summary()

    # From now on, every request goes to the host that is up.
    after = run_load(cluster.haproxy.port, LOADED_PATHS,
                     lambda path, status, body: status == 200 and body == RELEASE_ONE[path],
                     seconds=3, keepalive_clients=3, fresh_clients=2)
    assert after.requests > 100, after.summary()
    assert not after.failures and after.resets == 0, (
        f"after the host was marked down: {after.summary()}; while it died: {during.summary()}")

    # The client forkserver logs is the one HAProxy saw: ::1 here, although HAProxy
    # itself connects to forkserver from 127.0.0.1.
    for number in range(5):
        response = fetch_over_ipv6(cluster.haproxy.port, f"/a.txt?from-ipv6-{number}")
        assert status_of(response) == 200 and response.endswith(RELEASE_ONE["/a.txt"])
    lines = wait_for(lambda: len(access_lines(web1, "from-ipv6-")) == 5 and
                     access_lines(web1, "from-ipv6-"), what="the ::1 requests in web1's log")
    assert all(line.startswith("::1 - - [") for line in lines), lines
    load_lines = access_lines(web1, "GET /b.css")
    assert load_lines and all(line.startswith("127.0.0.1 - - [") for line in load_lines)


def test_rolling_a_new_docroot_with_reloads_loses_no_request(cluster: Cluster) -> None:
    thread, during = load_in_background(cluster.haproxy.port, [RELEASE_ONE, RELEASE_TWO],
                                        seconds=10)
    wait_answered(during, 20, "the load flowing")
    switch_symlink(cluster.current, "releases/two")  # shared here; one per host in life
    for host in cluster.hosts:
        old_workers = host.workers()
        host.signal(signal.SIGHUP)
        def new_generation(host: Server = host) -> bool:
            return "reload: generation 2 serving" in host.error_log

        def old_retired(old: list[int] = old_workers) -> bool:
            return not any(alive(pid) for pid in old)

        wait_for(new_generation, timeout=20, what=f"{host.directory.name}'s new generation")
        wait_for(old_retired, timeout=40, what=f"{host.directory.name}'s old workers retiring")
        # Requests answered with this host new and the other still old (or, after
        # the last host, with both new).
        wait_answered(during, 50, f"the load after {host.directory.name}'s reload")
    thread.join(timeout=60)
    assert not thread.is_alive(), "the load did not finish"
    assert during.requests > 200, during.summary()
    assert not during.failures and during.resets == 0, during.summary()
    # Every host now serves the new release only.
    for _ in range(20):
        for path in LOADED_PATHS:
            with socket.create_connection(("127.0.0.1", cluster.haproxy.port), timeout=10) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          .encode())
                response = b""
                while chunk := s.recv(65536):
                    response += chunk
            assert status_of(response) == 200 and response.endswith(RELEASE_TWO[path]), path
