"""forkserver.sites.htpasswd and .auth: bcrypt only, Basic parsed strictly, answers kept."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from forkserver.config.htpasswd import HtpasswdError, parse_htpasswd, read_htpasswd
from forkserver.sites.auth import (
    GRANTED,
    MAX_CREDENTIALS_CHARS,
    REFUSED,
    Guard,
    Pending,
    Verifier,
    basic_credentials,
)

HASH = bcrypt.hashpw(b"s3cret \xc3\xa9", bcrypt.gensalt(4)).decode()  # "s3cret é"


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_htpasswd_reads_bcrypt_kinds() -> None:
    text = (f"alice:{HASH}\n# a comment\n\nbob:{HASH.replace('$2b$', '$2y$')}\r\n"
            f"carol:{HASH.replace('$2b$', '$2a$')}")
    users = parse_htpasswd("staff.htpasswd", text).users
    assert sorted(users) == ["alice", "bob", "carol"]


@pytest.mark.parametrize(("line", "why"), [
    ("alice:$apr1$abcdefgh$0123456789012345678901", "Apache MD5"),
    ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
    ("alice:abcdefghijklm", "DES"),
    ("alice:password", "plain text"),
    ("alice:$6$salt$" + "x" * 86, "SHA-512"),
    ("nocolon", "is not 'user:hash'"),
    (":" + HASH, "is not 'user:hash'"),
    ("alice:" + HASH.replace("$04$", "$31$"), "cost 31"),
])
def test_htpasswd_refuses_other_kinds_with_the_line(line: str, why: str) -> None:
    with pytest.raises(HtpasswdError) as caught:
        parse_htpasswd("f.htpasswd", f"ok:{HASH}\n{line}\n")
    assert caught.value.problems[0].startswith("f.htpasswd:2: ")
    assert why in caught.value.problems[0]


def test_htpasswd_reports_every_problem_and_repeats() -> None:
    with pytest.raises(HtpasswdError) as caught:
        parse_htpasswd("f", f"a:x\nb:{HASH}\nb:{HASH}\nc:y\n")
    assert [p.split(":")[1] for p in caught.value.problems] == ["1", "3", "4"]


def test_htpasswd_file_problems(tmp_path: Path) -> None:
    with pytest.raises(HtpasswdError, match="cannot be read"):
        read_htpasswd(str(tmp_path / "missing"))
    bad = tmp_path / "latin1"
    bad.write_bytes(f"a:{HASH}\nb\xe9:{HASH}\n".encode("latin-1"))
    with pytest.raises(HtpasswdError, match=r"latin1:2: is not UTF-8"):
        read_htpasswd(str(bad))


@pytest.mark.parametrize("value", [
    None, "", "Basic", "Basic ", "Bearer abc", "Basic !!!!", "Basic YWxpY2U",  # no padding
    basic(b"alice"),  # no colon
    basic(b":password"),  # no user
    basic(b"alice\x00:pw"), basic(b"alice:pw\r\nX: y"),  # control characters
    basic(b"alice:\xff\xfe"),  # not UTF-8
    "Basic " + "QUFB" * (MAX_CREDENTIALS_CHARS // 4),  # huge
    "Basic YWxp Y2U6cHc=",  # a space inside
    "Basic\u00e9YWxpY2U6cHc=",
])
def test_malformed_authorization_is_no_credentials(value: str | None) -> None:
    assert basic_credentials(value) is None


def test_basic_credentials() -> None:
    assert basic_credentials(basic("alice:s3cret é".encode())) == ("alice", "s3cret é")
    assert basic_credentials("basic   " + base64.b64encode(b"a:b:c").decode()) == ("a", "b:c")


def test_basic_credentials_is_linear() -> None:
    # Bounded before any decoding: a 1 MiB header costs a length check.
    assert basic_credentials("Basic " + "A" * (1 << 20)) is None


def run(pending: bool | Pending, verifier: Verifier) -> bool:
    """Do what the worker does off the loop, then record it."""
    assert isinstance(pending, Pending)
    answer = pending.work()
    verifier.record(pending.key, answer)
    return answer


def test_one_bcrypt_check_per_credentials_then_memory() -> None:
    guard = Guard("Staff", parse_htpasswd("f", f"alice:{HASH}\n"))
    assert guard.challenge == 'Basic realm="Staff", charset="UTF-8"'
    verifier = Verifier()
    right = basic("alice:s3cret é".encode())
    wrong = basic(b"alice:nope")
    assert run(verifier.verdict(guard, right), verifier) is True
    assert verifier.verdict(guard, right) is GRANTED  # no second bcrypt check
    assert run(verifier.verdict(guard, wrong), verifier) is False
    assert verifier.verdict(guard, wrong) is REFUSED
    assert run(verifier.verdict(guard, basic(b"mallory:x")), verifier) is False  # unknown
    assert verifier.verdict(guard, "Basic ###") is REFUSED


def test_memory_holds_no_password_and_wrong_answers_do_not_evict_right_ones() -> None:
    guard = Guard("Staff", parse_htpasswd("f", f"alice:{HASH}\n"))
    verifier = Verifier()
    right = basic("alice:s3cret é".encode())
    run(verifier.verdict(guard, right), verifier)
    for i in range(3000):
        pending = verifier.verdict(guard, basic(f"alice:wrong{i}".encode()))
        assert isinstance(pending, Pending)
        verifier.record(pending.key, False)  # as if checked
    assert verifier.verdict(guard, right) is GRANTED
    assert len(verifier._refused) <= 1024
    keys = list(verifier._granted) + list(verifier._refused)
    assert all(len(key) == 32 and b"wrong" not in key and b"s3cret" not in key for key in keys)
