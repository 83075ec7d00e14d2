"""``limits.min_send_rate``: telling a slow reader from a congested one.

Owns the per-response tracker the worker's sweep consults for each connection that
is waiting to send. Must not touch sockets: the worker passes the bytes it has sent
of the response (which it counts anyway), and resets the connection itself.

Why a sliding window and not a per-send deadline: ``timeouts.send`` ends a response
that makes no progress at all, but a client that reads a few bytes a second makes
progress forever and holds its response — and up to megabytes of socket buffer — for
as long as it likes. The average over the last ``SEND_RATE_WINDOW_SECONDS`` judges
the pace; a response is judged only once it has been sending that long, so a
response's first stall (a TCP slow start, a window update in flight) is never held
against it.

Cost: nothing per send; per sweep (4 Hz) and per connection that is waiting to send,
one comparison, and at most once a second a sample and a look back over at most
``SAMPLES`` of them. Samples are taken at least ``SAMPLE_SECONDS`` apart (at the
sweep's own times), so the ring always holds one at least a window old: the average
is over the time since the newest such sample — a window of 10 s to about 11.5 s,
measured, not assumed, so a late sweep (a busy loop) can neither shorten it nor make
a reader look slower than it was.
"""

from __future__ import annotations

# Averaged over this long, and judged only once a response has been waiting on its
# client this long (SPEC §9): shorter windows would reset clients on an ordinary
# congestion stall.
SEND_RATE_WINDOW_SECONDS = 10.0
SAMPLE_SECONDS = 1.0  # the window slides in steps at least this long
SAMPLES = int(SEND_RATE_WINDOW_SECONDS / SAMPLE_SECONDS) + 1


class SendRate:
    """One response's progress, sampled by the sweep about once a second."""

    __slots__ = ("next_sample", "response", "samples", "sent", "started", "times")

    def __init__(self, now: float, sent: int, response: int) -> None:
        self.response = response  # which response of the connection this tracks
        self.started = now
        self.times = [now] + [0.0] * (SAMPLES - 1)  # a ring of (time, bytes sent) samples
        self.sent = [sent] + [0] * (SAMPLES - 1)
        self.samples = 1
        self.next_sample = now + SAMPLE_SECONDS

    def too_slow(self, now: float, sent: int, min_rate: int) -> bool:
        """Whether the response's last window averaged below ``min_rate`` bytes/s.

        ``sent`` is the bytes of the response sent so far.
        """
        if now >= self.next_sample:
            index = self.samples % SAMPLES
            self.times[index] = now
            self.sent[index] = sent
            self.samples += 1
            self.next_sample = now + SAMPLE_SECONDS
        if now - self.started < SEND_RATE_WINDOW_SECONDS:
            return False  # the first window has not passed yet
        horizon = now - SEND_RATE_WINDOW_SECONDS
        for back in range(1, min(self.samples, SAMPLES) + 1):
            index = (self.samples - back) % SAMPLES
            if self.times[index] <= horizon:
                return (sent - self.sent[index]) < min_rate * (now - self.times[index])
        return False  # unreachable: samples are a second apart, the ring spans 10 s
