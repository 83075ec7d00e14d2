"""The shared per-client table and a worker's admissions (forkserver/protect/clients.py,
admission.py): keys, exempt networks, connection counts across workers, the token
bucket, a full table, a worker killed while holding counts, the monotonic clock."""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest

from forkserver.config.model import Limits
from forkserver.config.protection import MAX_CONNECTIONS_PER_CLIENT as COUNT_MAX
from forkserver.protect.admission import UNLIMITED, ClientLimits, retry_after
from forkserver.protect.clients import (
    NO_ROW,
    PROBES,
    ClientTable,
    Exempt,
    client_key,
)


def limits(
    table: ClientTable, slot: int, **settings: object
) -> ClientLimits:
    """One worker's view: the master assigns the column, the worker finds it by slot."""
    assert table.assign(slot) >= 0
    return ClientLimits(Limits(**settings), table, table.column_of(slot))  # type: ignore[arg-type]


# -- keys and exempt networks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])),
        ("::ffff:192.0.2.7", bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])),
        ("2001:db8::1", bytes.fromhex("20010db8000000000000000000000001")),
        ("fe80::1%eth0", bytes.fromhex("fe800000000000000000000000000001")),
        ("unix", b""),
        ("", b""),
        ("1.2.3", b""),
        ("999.1.1.1", b""),
        ("not:an:address:::", b""),
    ],
)
def test_client_key(address: str, key: bytes) -> None:
    assert client_key(address) == key


def test_ipv4_and_its_mapped_form_are_one_client() -> None:
    assert client_key("10.1.2.3") == client_key("::ffff:10.1.2.3")


def test_exempt_matches_ipv4_ipv6_and_mapped_addresses() -> None:
    exempt = Exempt(("10.0.0.0/8", "2001:db8::/32", "192.0.2.9/32"))
    assert client_key("10.200.3.4") in exempt
    assert client_key("::ffff:10.200.3.4") in exempt
    assert client_key("192.0.2.9") in exempt
    assert client_key("2001:db8:ffff::1") in exempt
    assert client_key("11.0.0.1") not in exempt
    assert client_key("192.0.2.10") not in exempt
    assert client_key("2001:db9::1") not in exempt
    assert b"" not in exempt
    assert client_key("10.0.0.1") not in Exempt(())


# -- connections across workers ---------------------------------------------------------


def test_connections_are_counted_across_workers() -> None:
    table = ClientTable(rows=64)
    first = limits(table, 0, connections_per_client=2)
    second = limits(table, 1, connections_per_client=2)
    key = client_key("192.0.2.1")
    a = first.open(key, 1.0)
    b = second.open(key, 1.0)
    assert not a.refused and not b.refused
    refused = first.open(key, 1.0)
    assert refused.refused
    assert second.open(key, 1.0).refused
    assert first.refused_connections == 1 and second.refused_connections == 1
    # Another client is not affected.
    assert not second.open(client_key("192.0.2.2"), 1.0).refused
    second.close(b)
    assert not first.open(key, 1.0).refused  # one closed: room for one more
    first.close(refused)  # a refused connection held no count: closing it is harmless
    assert table.connections(a.row) == 2


def test_a_closed_connection_releases_its_count_once() -> None:
    table = ClientTable(rows=16)
    worker = limits(table, 0, connections_per_client=1)
    key = client_key("2001:db8::5")
    admission = worker.open(key, 0.0)
    worker.close(admission)
    worker.close(admission)
    assert table.connections(admission.row) == 0


def test_worker_killed_while_holding_counts_does_not_block_its_clients() -> None:
    """A real forked worker counts connections, then dies by SIGKILL; the master's
    release at reap gives the client back its connections."""
    table = ClientTable(rows=64)
    column = table.assign(5)
    key = client_key("198.51.100.4")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            worker = ClientLimits(Limits(connections_per_client=3), table, column)
            for _ in range(3):
                worker.open(key, time.monotonic())
            os.write(ready_w, b"x")
            signal.pause()
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    survivor = limits(table, 6, connections_per_client=3)
    assert survivor.open(key, time.monotonic()).refused  # the dead-to-be holds all three
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    table.release(5)  # what the master does when it reaps the worker
    admission = survivor.open(key, time.monotonic())
    assert not admission.refused
    assert table.connections(admission.row) == 1
    assert table.assign(7) == column  # the column is free for the next worker


def test_clearing_a_column_leaves_the_others() -> None:
    # Room to spare, so no key's bounded probe runs out and leaves it untracked (-1).
    table = ClientTable(rows=1024, columns=4)
    workers = [limits(table, slot, connections_per_client=10) for slot in range(4)]
    keys = [client_key(f"10.0.0.{n}") for n in range(1, 20)]
    rows = [[w.open(k, 0.0).row for k in keys] for w in workers]
    assert all(row >= 0 for row in rows[0])
    table.release(2)
    for row in rows[0]:
        assert table.connections(row) == 3
        assert table.count(row, 2) == 0


def test_workers_beyond_the_columns_count_privately_and_still_see_the_others() -> None:
    table = ClientTable(rows=16, columns=1)
    shared = limits(table, 0, connections_per_client=2)
    assert table.assign(1) == -1
    private = ClientLimits(Limits(connections_per_client=2), table, -1)
    key = client_key("192.0.2.3")
    shared.open(key, 0.0)
    first = private.open(key, 0.0)
    assert not first.refused
    assert private.open(key, 0.0).refused  # one shared + one private = the limit
    private.close(first)
    assert not private.open(key, 0.0).refused
    assert private.private  # kept in the worker, not in the table


def test_counts_saturate_rather_than_wrap() -> None:
    table = ClientTable(rows=8, columns=1)
    row = table.find(client_key("192.0.2.8"), 0.0)
    table.add(row, 0, COUNT_MAX + 5)
    assert table.count(row, 0) == COUNT_MAX
    table.add(row, 0, -(COUNT_MAX + 5))
    assert table.count(row, 0) == 0


def test_exempt_and_addressless_clients_are_never_limited() -> None:
    table = ClientTable(rows=8)
    worker = limits(
        table, 0, connections_per_client=1, requests_per_second=1.0, exempt=("10.0.0.0/8",)
    )
    for _ in range(5):
        admission = worker.open(client_key("10.9.9.9"), 0.0)
        assert admission is UNLIMITED
        assert worker.request(admission, 0.0) == 0.0
    assert worker.open(b"", 0.0) is UNLIMITED  # a unix socket peer
    assert table.used_rows() == 0


# -- the token bucket -------------------------------------------------------------------


def test_bucket_holds_burst_plus_one_and_refills_at_the_rate() -> None:
    table = ClientTable(rows=16)
    worker = limits(table, 0, requests_per_second=2.0, burst=3)
    admission = worker.open(client_key("192.0.2.50"), 100.0)
    assert [worker.request(admission, 100.0) for _ in range(4)] == [0.0] * 4
    wait = worker.request(admission, 100.0)
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == 1
    assert worker.refused_requests == 1
    assert worker.request(admission, 100.49) > 0
    assert worker.request(admission, 100.5) == 0.0  # one token back after 1/rate
    assert worker.request(admission, 102.5) == 0.0
    # Idle long enough and the whole bucket is back, not more.
    assert [worker.request(admission, 200.0) for _ in range(5)].count(0.0) == 4


def test_rate_is_shared_by_every_connection_and_worker_of_a_client() -> None:
    table = ClientTable(rows=16)
    first = limits(table, 0, requests_per_second=1.0, burst=1)
    second = limits(table, 1, requests_per_second=1.0, burst=1)
    key = client_key("2001:db8::77")
    a, b = first.open(key, 5.0), second.open(key, 5.0)
    assert first.request(a, 5.0) == 0.0
    assert second.request(b, 5.0) == 0.0
    assert first.request(a, 5.0) > 0 and second.request(b, 5.0) > 0


def test_garbage_arrival_time_never_refuses() -> None:
    """A torn read (or any impossible value) counts as a fresh client."""
    table = ClientTable(rows=16)
    worker = limits(table, 0, requests_per_second=1.0)
    admission = worker.open(client_key("192.0.2.60"), 50.0)
    for garbage in (1e300, float("inf"), float("nan"), 50.0 + 10.0):
        table.set_tat(admission.row, garbage)
        assert worker.request(admission, 50.0) == 0.0
    table.set_tat(admission.row, -1e300)
    assert worker.request(admission, 50.0) == 0.0


def test_rate_and_connection_limits_together() -> None:
    table = ClientTable(rows=16)
    worker = limits(table, 0, connections_per_client=1, requests_per_second=1.0)
    key = client_key("192.0.2.61")
    admission = worker.open(key, 0.0)
    assert worker.request(admission, 0.0) == 0.0
    assert worker.request(admission, 0.0) > 0
    assert worker.open(key, 0.0).refused


def test_limits_use_the_monotonic_clock_shared_by_processes() -> None:
    """The arrival time a child writes with its monotonic clock means the same instant
    to the parent: CLOCK_MONOTONIC is one clock for the whole system on Linux."""
    table = ClientTable(rows=16)
    parent = limits(table, 0, requests_per_second=0.5)
    key = client_key("192.0.2.62")
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            child = ClientLimits(Limits(requests_per_second=0.5), table, -1)
            admission = child.open(key, time.monotonic())
            code = 0 if child.request(admission, time.monotonic()) == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    admission = parent.open(key, time.monotonic())
    wait = parent.request(admission, time.monotonic())
    assert 0 < wait <= 2.0  # the child's request, 2 s apart at 0.5/s, is seen here


# -- a full table -----------------------------------------------------------------------


def test_a_flood_of_distinct_addresses_is_bounded_and_refuses_nobody() -> None:
    """Far more clients than rows, each holding a connection: the table stays its size,
    clients without a row are served untracked (and counted), and every tracked
    client is still limited exactly."""
    table = ClientTable(rows=256)
    size = table.size
    worker = limits(table, 0, connections_per_client=1)
    held = []
    for n in range(5000):
        key = client_key(f"2001:db8::{n:x}")
        admission = worker.open(key, 0.0)
        assert not admission.refused  # each client's first connection: never refused
        held.append((key, admission))
    assert table.used_rows() <= 256
    assert table.size == size and len(table.memory) == size  # memory never grows
    tracked = [(k, a) for k, a in held if a.counted_row != NO_ROW]
    assert len(tracked) + worker.untracked == 5000
    assert worker.untracked > 0
    assert len(tracked) >= 256 // 2  # most rows are found within PROBES of the hash
    for key, _ in tracked[:50]:
        assert worker.open(key, 0.0).refused  # tracked clients stay limited
    # Connections close: their rows become idle and are reused by new clients.
    for _, admission in held:
        worker.close(admission)
    before = worker.untracked
    for n in range(1000):
        admission = worker.open(client_key(f"192.0.{n // 250}.{n % 250}"), 0.0)
        assert admission.counted_row != NO_ROW
        worker.close(admission)
    assert worker.untracked == before
    assert table.used_rows() <= 256 and len(table.memory) == size


def test_idle_rows_are_reclaimed_only_when_nothing_is_left_to_remember() -> None:
    table = ClientTable(rows=PROBES)  # one probe window: every key meets every row
    worker = limits(table, 0, requests_per_second=1.0, burst=0)
    keys = [client_key(f"198.51.100.{n}") for n in range(PROBES)]
    for key in keys:
        assert worker.request(worker.open(key, 10.0), 10.0) == 0.0  # bucket empty till 11
    newcomer = client_key("203.0.113.1")
    assert worker.open(newcomer, 10.5) is UNLIMITED  # all rows still remember
    assert worker.untracked == 1
    admission = worker.open(newcomer, 11.0)  # buckets full again: rows reusable
    assert admission.row != NO_ROW
    assert worker.request(admission, 11.0) == 0.0


def test_a_reused_row_is_noticed_by_the_connection_that_had_it() -> None:
    table = ClientTable(rows=PROBES)
    worker = limits(table, 0, requests_per_second=1.0)
    old = worker.open(client_key("198.51.100.9"), 0.0)
    table.claim(old.row, client_key("203.0.113.9"))  # reused while the client was idle
    assert worker.request(old, 5.0) == 0.0
    assert table.holds(old.row, client_key("198.51.100.9"))
    assert worker.request(old, 5.0) > 0  # its own bucket again


def test_a_row_reused_between_lookup_and_count_charges_nobody() -> None:
    table = ClientTable(rows=PROBES)
    worker = limits(table, 0, connections_per_client=5)
    key = client_key("198.51.100.10")
    row = table.find(key, 0.0)
    original = table.holds

    def stolen(row_: int, key_: bytes) -> bool:
        table.claim(row, client_key("203.0.113.10"))  # another worker, just now
        return original(row_, key_)

    table.holds = stolen  # type: ignore[method-assign, assignment]
    assert worker.open(key, 0.0) is UNLIMITED
    table.holds = original  # type: ignore[method-assign]
    assert table.connections(row) == 0


def test_the_zero_address_is_untracked_not_an_empty_row() -> None:
    table = ClientTable(rows=8)
    assert table.find(bytes(16), 0.0) == NO_ROW
    assert table.find(client_key("::"), 0.0) == NO_ROW


def test_layout_is_8_byte_aligned() -> None:
    for columns in (1, 3, 64):
        table = ClientTable(rows=4, columns=columns)
        assert table.row_size % 8 == 0 and table.rows_offset % 8 == 0
        assert struct.unpack_from("=II", table.memory, 0)[1] == columns
