"""The pieces of `forkserver -s` that need no server: the pidfile read from a file that
does not validate (signalcommand.salvage_pidfile), and the outcome file a master leaves beside
its pidfile for -s reload|upgrade (service.write_outcome / read_outcome)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkserver.service import outcome_path, read_outcome, remove_outcome, write_outcome
from forkserver.signalcommand import salvage_pidfile


@pytest.mark.parametrize(("text", "expected"), [
    ("pidfile: run/fs.pid\nport: -5\n", "run/fs.pid"),              # parses, does not validate
    ("pidfile: /run/x.pid\nport: [oops\n", "/run/x.pid"),           # a YAML syntax error
    ('pidfile: "/run/x y.pid"  # quoted\nhost: ::\n', "/run/x y.pid"),
    ("port: -5\n", None),
    ("pidfile: null\n", None),
    ("- a list\n", None),
    ("timeouts:\n  pidfile: /nested.pid\n  x: [\n", None),            # not top level
])
def test_salvage_pidfile(tmp_path: Path, text: str, expected: str | None) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(text)
    found = salvage_pidfile(str(config))
    assert found == (str(tmp_path / expected) if expected else None)


def test_salvage_pidfile_of_a_missing_file(tmp_path: Path) -> None:
    assert salvage_pidfile(str(tmp_path / "absent.yaml")) is None
    assert salvage_pidfile(None) is None


def test_outcomes_count_up_and_are_replaced_whole(tmp_path: Path) -> None:
    pidfile = str(tmp_path / "fs.pid")
    assert read_outcome(pidfile) is None
    write_outcome(pidfile, "start", True, "master started")
    write_outcome(pidfile, "reload", False, "reload: port: in use")
    outcome = read_outcome(pidfile)
    assert outcome is not None
    assert (outcome.serial, outcome.action, outcome.ok) == (2, "reload", False)
    assert outcome.message == "reload: port: in use"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fs.pid.state"]  # no temp left
    remove_outcome(pidfile)
    assert read_outcome(pidfile) is None


def test_a_damaged_outcome_file_reads_as_none(tmp_path: Path) -> None:
    pidfile = str(tmp_path / "fs.pid")
    Path(outcome_path(pidfile)).write_text('{"serial": "x"')
    assert read_outcome(pidfile) is None
    write_outcome(pidfile, "reload", True, "ok")  # starts again from 1
    outcome = read_outcome(pidfile)
    assert outcome is not None and outcome.serial == 1
