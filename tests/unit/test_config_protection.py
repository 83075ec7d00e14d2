"""The SPEC §9 keys (forkserver/config/protection.py): value checks, sizes, and
burst without a rate refused by load_config."""

from __future__ import annotations

from pathlib import Path

import pytest

from forkserver.config import protection as checks
from forkserver.config.checks import Check, Invalid, InvalidItems
from forkserver.config.layers import load_config
from forkserver.config.protection import parse_size
from forkserver.errors import ConfigError

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("check", "value", "result"),
    [
        (checks.connections_per_client, 0, 0),
        (checks.connections_per_client, 10, 10),
        (checks.requests_per_second, 0, 0.0),
        (checks.requests_per_second, 2.5, 2.5),
        (checks.requests_per_second, 10, 10.0),
        (checks.burst, 0, 0),
        (checks.burst, 20, 20),
        (checks.exempt, [], ()),
        (checks.exempt, ["10.0.0.0/8", "::1"], ("10.0.0.0/8", "::1/128")),
        (checks.min_send_rate, 0, 0),
        (checks.min_send_rate, 512, 512),
        (checks.min_send_rate, "1KiB", 1024),
        (checks.worker_memory_limit, None, None),
        (checks.worker_memory_limit, "512MiB", 512 * MiB),
        (checks.worker_memory_limit, 64 * MiB, 64 * MiB),
    ],
)
def test_accepted(check: Check, value: object, result: object) -> None:
    assert check(value) == result


@pytest.mark.parametrize(
    ("check", "value", "reason"),
    [
        (checks.connections_per_client, -1, "out of range 0"),
        (checks.connections_per_client, 70000, "out of range"),
        (checks.connections_per_client, True, "is a boolean, expected an integer"),
        (checks.connections_per_client, "5", "is a string"),
        (checks.requests_per_second, -0.5, "out of range"),
        (checks.requests_per_second, float("inf"), "out of range"),
        (checks.requests_per_second, float("nan"), "out of range"),
        (checks.requests_per_second, "10/s", "is a string"),
        (checks.burst, 1.5, "is a number, expected an integer"),
        (checks.burst, -3, "out of range"),
        (checks.exempt, "10.0.0.0/8", "is a string, expected a list"),
        (checks.min_send_rate, -1, "out of range"),
        (checks.min_send_rate, "fast", "is not a size"),
        (checks.min_send_rate, 1.5, "is a number"),
        (checks.worker_memory_limit, "512", "too small"),
        (checks.worker_memory_limit, "lots", "is not a size such as '512MiB'"),
        (checks.worker_memory_limit, 0, "too small"),
        (checks.worker_memory_limit, [], "is a list"),
    ],
)
def test_refused(check: Check, value: object, reason: str) -> None:
    with pytest.raises(Invalid, match=reason):
        check(value)


def test_exempt_reports_each_bad_network() -> None:
    with pytest.raises(InvalidItems) as caught:
        checks.exempt(["10.0.0.1/8", "nonsense", "::1"])
    assert [index for index, _, _ in caught.value.problems] == [0, 1]


def test_burst_without_a_rate_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(f"docroot: {tmp_path}\nlimits:\n  burst: 10\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(config), {})
    assert caught.value.problems == [
        f"{config}:3: limits.burst: 10 needs limits.requests_per_second (a burst is the "
        "extra requests a rate allows at once)"
    ]
    config.write_text(f"docroot: {tmp_path}\nlimits:\n  burst: 10\n  requests_per_second: 1\n")
    assert load_config(str(config), {}).limits.burst == 10


def test_every_key_from_yaml_and_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        f"docroot: {tmp_path}\nworker_memory_limit: 256MiB\nlimits:\n"
        "  connections_per_client: 8\n  requests_per_second: 2.5\n  burst: 4\n"
        "  exempt: [10.0.0.0/8]\n  min_send_rate: 2KiB\n"
    )
    loaded = load_config(str(config), {})
    limits = loaded.limits
    assert (limits.connections_per_client, limits.requests_per_second, limits.burst,
            limits.exempt, limits.min_send_rate) == (8, 2.5, 4, ("10.0.0.0/8",), 2048)
    assert loaded.worker_memory_limit == 256 * MiB
    defaults = load_config(None, {}, cwd=str(tmp_path))
    assert defaults.worker_memory_limit is None and defaults.limits.connections_per_client == 0


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * MiB), ("512M", 512 * MiB), ("1GiB", 1024 * MiB), ("2G", 2048 * MiB),
        ("300MB", 300_000_000), ("64kB", 64_000), ("64KiB", 65536), ("1.5GiB", 1536 * MiB),
        ("1000", 1000), ("1000B", 1000), (" 8 MiB ", 8 * MiB), ("1TiB", 1024**4),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "MiB", "-1MiB", "1 mib", "1XB", "1e9", "12.MiB", "1,5GiB", "9" * 40, "1 2MiB"]
)
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


