"""limits.min_send_rate's tracker (forkserver/protect/sendrate.py), with the clock
as a number: the first window is free, the average slides, late sweeps never hurt."""

from __future__ import annotations

from forkserver.protect.sendrate import SendRate

RATE = 1000  # bytes/s


def run(tracker: SendRate, start: float, seconds: float, per_second: int,
        sent: int, step: float = 0.25) -> tuple[bool, float, int]:
    """Sweep every ``step`` seconds while the client reads ``per_second``; stop at the
    first verdict of too slow. Returns (reset, time, bytes sent)."""
    now = start
    while now < start + seconds:
        now += step
        sent += int(per_second * step)
        if tracker.too_slow(now, sent, RATE):
            return True, now, sent
    return False, now, sent


def test_a_stalled_response_is_not_judged_in_its_first_window() -> None:
    tracker = SendRate(0.0, 0, 1)
    assert not tracker.too_slow(9.99, 0, RATE)
    assert tracker.too_slow(10.0, 0, RATE)


def test_a_slow_reader_is_reset_soon_after_the_first_window() -> None:
    tracker = SendRate(0.0, 0, 1)
    reset, when, _ = run(tracker, 0.0, 60.0, RATE // 10, 0)
    assert reset and 10.0 <= when <= 10.5


def test_a_reader_at_the_minimum_or_faster_is_never_reset() -> None:
    for pace in (RATE, RATE * 2, RATE * 1000):
        reset, _, _ = run(SendRate(0.0, 0, 1), 0.0, 120.0, pace, 0)
        assert not reset


def test_the_window_slides_a_fast_start_does_not_buy_a_slow_finish() -> None:
    tracker = SendRate(0.0, 0, 1)
    reset, now, sent = run(tracker, 0.0, 30.0, RATE * 100, 0)  # fast for 30 s
    assert not reset
    reset, when, _ = run(tracker, now, 60.0, RATE // 4, sent)  # then a trickle
    assert reset and when - now <= 11.0  # judged on the last ~10 s, not the average


def test_a_short_stall_inside_a_fast_window_is_forgiven() -> None:
    tracker = SendRate(0.0, 0, 1)
    reset, now, sent = run(tracker, 0.0, 20.0, RATE * 3, 0)
    reset2, now, sent = run(tracker, now, 5.0, 0, sent)  # 5 s of nothing
    reset3, _, _ = run(tracker, now, 30.0, RATE * 3, sent)
    assert not (reset or reset2 or reset3)


def test_late_sweeps_measure_the_real_window() -> None:
    """A busy loop that sweeps every 3 s instead of 0.25 s: the verdicts are the same."""
    slow, _, _ = run(SendRate(0.0, 0, 1), 0.0, 60.0, RATE // 2, 0, step=3.0)
    fine, _, _ = run(SendRate(0.0, 0, 1), 0.0, 60.0, RATE, 0, step=3.0)
    assert slow and not fine


def test_bytes_sent_before_the_tracker_started_do_not_count() -> None:
    tracker = SendRate(100.0, 10**9, 7)
    assert tracker.too_slow(111.0, 10**9 + 10, RATE)
    assert tracker.response == 7
