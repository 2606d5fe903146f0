"""How much longer than its best a link's record took to arrive: the sender's clock in each
record against the receiver's, with neither clock set to the other.

A request carries the time its caller has left, and each node it passes takes off the time it
held it; the time it spent between nodes is unknown. On a healthy link that is a round trip's
half, and nothing to count; but TCP retransmits a lost segment after a timeout that doubles
(200 ms, 400 ms, ... on Linux), and a record behind a loss can arrive seconds late, its request
then run after its caller gave up (seen on real processes at 30% loss: started up to 0.6 s
after the caller's deadline).

Each sealed record carries the sender's monotonic clock in milliseconds (32 bits, wrapping). The
receiver subtracts it from its own: the difference is the transit time plus the unknown
offset between the two clocks. Its least value over the last few minutes is the link's best
(the offset and the least transit, as LEDBAT takes a base delay); what a record's difference
exceeds it by is how much longer it took than the best, queueing in either kernel and
retransmission included. Only minutes are kept, so that clocks drifting apart (tens of
microseconds a second) move the base with them.
"""

from __future__ import annotations

WRAP = 1 << 32
"""The sender's clock travels as milliseconds modulo this (a 4-byte field)."""

BUCKET_MS = 60_000
BUCKETS = 3
"""The base is the least difference within the last `BUCKETS` minutes of arrivals."""


def clock_field(now_s: float) -> int:
    """A clock reading, in seconds, as the field a record carries."""
    return int(now_s * 1000) % WRAP


class TransitDelay:
    """One direction of one link: the least clock difference per minute of arrivals."""

    __slots__ = ("_minima",)

    def __init__(self) -> None:
        self._minima: list[tuple[int, int]] = []  # (minute, least difference), oldest first

    def extra(self, sent: int, now_s: float) -> float:
        """A record sent at `sent` (the sender's field) arrived at `now_s` (our clock, in
        seconds): how many seconds longer it took than the link's best lately (0 or more)."""
        now_ms = int(now_s * 1000)
        # The difference modulo 2**32, as a signed number: the two clocks' offset is anything.
        diff = (now_ms - sent) % WRAP
        if diff >= WRAP // 2:
            diff -= WRAP
        minute = now_ms // BUCKET_MS
        minima = self._minima
        if minima and minima[-1][0] == minute:
            if diff < minima[-1][1]:
                minima[-1] = (minute, diff)
        else:
            minima.append((minute, diff))
            while minima[0][0] <= minute - BUCKETS:
                del minima[0]
        base = min(least for _, least in minima)
        return (diff - base) / 1000
