"""An operator's first hour (issue 20): the mistakes a newcomer from nginx makes.

Each test runs the real program: ``--check`` must refuse what cannot start (exit 2,
which the systemd unit does not restart) with a hint that points the right way, and
the running server must say what it does (a root master without ``user:``) and leave
out of the access log what the operator asked to leave out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import get, request, running, status_of, wait_for

EXIT_USAGE = 2


def check(directory: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``forkserver -c site.yaml --check`` on ``text``, run in ``directory``."""
    (directory / "site.yaml").write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "forkserver", "-c", "site.yaml", "--check", *args],
        cwd=directory, capture_output=True, text=True, timeout=30, check=False,
    )


# -- issue 20.4: whatever --check accepts can start --------------------------------

HOSTS = [
    ("host: 127.0.0.1:8080\n",
     "site.yaml:1: host: '127.0.0.1:8080' is an address and a port "
     "(use host: 127.0.0.1 and port: 8080)"),
    ("host: http://127.0.0.1\n",
     "site.yaml:1: host: 'http://127.0.0.1' is a URL; host is the address alone "
     "(use host: 127.0.0.1)"),
    ('host: "[::1]"\n',
     "site.yaml:1: host: '[::1]' has brackets, which belong in URLs only (use host: '::1')"),
    ("host: nothing.invalid\n",
     "host: 'nothing.invalid' does not resolve: Name or service not known"),
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of a real machine.
    ("host: 192.0.2.77\n",
     "host: '192.0.2.77' is not an address of this machine (see ip address)"),
]


@pytest.mark.parametrize(("text", "message"), HOSTS, ids=[h[0] for h in HOSTS])
def test_check_refuses_a_host_that_cannot_be_bound(
    tmp_path: Path, text: str, message: str
) -> None:
    result = check(tmp_path, text)
    assert result.returncode == EXIT_USAGE, result
    assert result.stderr.splitlines() == [f"forkserver: {message}"]
    assert result.stdout == ""


def test_the_same_host_rules_apply_to_the_command_line(tmp_path: Path) -> None:
    result = check(tmp_path, "port: 0\n", "--host", "[::1]:8080")
    assert result.returncode == EXIT_USAGE
    assert result.stderr.splitlines() == [
        "forkserver: command line: --host: '[::1]:8080' is an address and a port "
        "(use host: '::1' and port: 8080)"
    ]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "'::1'", "'::'", "0.0.0.0"])
def test_what_check_accepts_starts(tmp_path: Path, host: str) -> None:
    result = check(tmp_path, f"host: {host}\n")
    assert result.returncode == 0, result.stderr
    (tmp_path / "www").mkdir()
    plain = host.strip("'")
    with running(tmp_path, {"host": plain, "docroot": str(tmp_path / "www"),
                            "workers": 1}) as server:
        assert "listening on" in server.error_log
        if plain in ("127.0.0.1", "0.0.0.0", "localhost"):
            assert status_of(get(server.port)) in (200, 403, 404)


# -- issue 20.5: hints that point the right way --------------------------------------


def test_check_points_nginx_habits_and_unindented_children_the_right_way(
    tmp_path: Path,
) -> None:
    result = check(tmp_path, (
        "listen: 8080\n"
        "root: .\n"
        "timeouts:\n"
        "header: 5\n"
        "keepalive_timeout: 65\n"
    ))
    assert result.returncode == EXIT_USAGE
    assert result.stderr.splitlines() == [
        # listen is a key of its own now (SPEC §6): nginx's bare port gets its form.
        "forkserver: site.yaml:1: listen: 8080 is an integer, expected a list of listeners "
        "such as ['127.0.0.1:8080', {address: '127.0.0.1:8443', tls: true}]",
        "forkserver: site.yaml:2: root: unknown key (nginx's root is docroot: here)",
        "forkserver: site.yaml:4: header: unknown top-level key; it is a key of timeouts: "
        "indent it under timeouts: (line 3)",
        "forkserver: site.yaml:5: keepalive_timeout: unknown key (nginx's keepalive_timeout "
        "is keepalive: under timeouts: here)",
    ]


# -- issue 20.6a: a root master without user: says its workers stay root -----------

ROOT_WARNING = (
    "started as root without user: workers serve requests as root; set user (such as "
    "www-data) so they drop to an unprivileged account"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="the warning is about starting as root")
def test_a_root_master_without_user_warns_once(tmp_path: Path) -> None:
    result = check(tmp_path, "port: 0\n")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [f"forkserver: warning: {ROOT_WARNING}"]
    (tmp_path / "www").mkdir()
    settings = {"docroot": str(tmp_path / "www"), "workers": 2, "max_requests": 1}
    with running(tmp_path, settings) as server:
        # Workers recycled after each request are respawned: still one warning.
        first = set(server.workers())

        def recycled() -> bool:
            get(server.port)  # whichever worker takes it retires after it
            return not first & set(server.workers())

        wait_for(recycled, interval=0.1, what="both first workers recycled")
        server.wait_serving()
        lines = [line for line in server.error_log.splitlines() if ROOT_WARNING in line]
        assert len(lines) == 1 and "[warning]" in lines[0], lines


@pytest.mark.skipif(os.geteuid() != 0, reason="user: takes effect only as root")
def test_a_root_master_with_user_does_not_warn(tmp_path: Path) -> None:
    result = check(tmp_path, "port: 0\nuser: nobody\ndocroot: /\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# -- issue 20.6d: status.access_log: false keeps health checks out -----------------

STATUS = "/server-status"


def fetch(port: int, path: str, host: str) -> int:
    response = request(
        port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), host=host
    )
    return status_of(response)


def test_status_requests_can_stay_out_of_the_access_log(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.txt").write_text("alpha\n")
    settings = {
        "host": "::", "docroot": str(tmp_path / "www"), "workers": 1,
        # Only ::1 is a monitor; 127.0.0.1 (IPv4-mapped on this dual-stack socket) is not.
        "status": {"path": STATUS, "allow": ["::1/128"], "access_log": False},
    }
    with running(tmp_path, settings) as server:
        for _ in range(3):
            assert fetch(server.port, STATUS, "::1") == 200
        assert fetch(server.port, STATUS, "127.0.0.1") == 404  # refused: still logged
        assert fetch(server.port, "/a.txt", "::1") == 200
        # One worker writes its lines in order: once the last request's line is there,
        # any status line would be too.
        lines = wait_for(
            lambda: [x for x in server.access_log.splitlines() if "GET /a.txt" in x]
            and server.access_log.splitlines(),
            what="the file request's access-log line",
        )
    assert len(lines) == 2, lines
    assert lines[0].startswith("127.0.0.1 ") and f'"GET {STATUS} HTTP/1.1" 404 ' in lines[0]
    assert lines[1].startswith("::1 ") and '"GET /a.txt HTTP/1.1" 200 ' in lines[1]
