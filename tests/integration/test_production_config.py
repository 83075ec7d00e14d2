"""conf/production.yaml passes `--check` on a machine prepared as its header says.

The machine is imitated in a temporary directory: the test copies the file and
rewrites only the absolute paths of its values (/srv/www, /var/log/forkserver,
/run/forkserver) to that directory, and checks that everything else is the shipped
file's, verbatim. So it needs no /var/log/forkserver on the test machine.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "conf" / "production.yaml"
PATHS = {"/srv/www": "www", "/var/log/forkserver": "log", "/run/forkserver": "run"}
PATH_KEYS = {"docroot", "pidfile", "access_log", "error_log"}


@pytest.fixture
def machine() -> Iterator[Path]:
    """The prepared directories, under a root that the workers' user may traverse
    (pytest's own tmp directory is 0700 root's: --check as root would rightly refuse)."""
    with tempfile.TemporaryDirectory(prefix="forkserver-prod-") as name:
        root = Path(name)
        root.chmod(0o755)
        for directory in PATHS.values():
            (root / directory).mkdir(mode=0o755)
        yield root


def relocated(text: str, root: Path) -> str:
    """The file with its value paths (not its comments) moved under ``root``."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            for shipped, here in PATHS.items():
                line = line.replace(shipped, str(root / here))
        lines.append(line)
    return "".join(lines)


@pytest.mark.skipif(not any(p.pw_name == "www-data" for p in pwd.getpwall()),
                    reason="no www-data account (the user: of conf/production.yaml)")
def test_the_production_sample_passes_check(machine: Path) -> None:
    shipped = PRODUCTION.read_text()
    text = relocated(shipped, machine)
    original, moved = yaml.safe_load(shipped), yaml.safe_load(text)
    # Only the paths moved: every other key is the shipped one, verbatim.
    assert {k: v for k, v in moved.items() if k not in PATH_KEYS} == {
        k: v for k, v in original.items() if k not in PATH_KEYS
    }
    assert {moved[k].split(str(machine), 1)[0] for k in PATH_KEYS} == {""}
    assert sum(a != b for a, b in zip(shipped.splitlines(), text.splitlines(),
                                      strict=True)) == len(PATH_KEYS)
    config = machine / "site.yaml"
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "forkserver", "-c", str(config), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"configuration {config} is valid" in result.stdout
    if os.geteuid() == 0:
        assert "warning" not in result.stderr  # workers do drop to www-data
