"""The value checks of the SPEC §9 keys (forkserver/protect/checks.py)."""

from __future__ import annotations

import pytest

from forkserver.config.checks import Check, Invalid, InvalidItems
from forkserver.protect import checks

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


def test_burst_without_a_rate_is_a_configuration_error() -> None:
    assert checks.cross_key_problems(0.0, 0) == []
    assert checks.cross_key_problems(5.0, 10) == []
    (problem,) = checks.cross_key_problems(0.0, 10)
    assert problem.startswith("limits.burst: 10 needs limits.requests_per_second")
