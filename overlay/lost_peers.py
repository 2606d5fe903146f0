"""The partition-heal record: peers declared failed, retried in case they come back.

Pastry alone leaves two self-consistent rings after a partition: each side has dropped the
other and nothing makes either look again. So every peer declared failed is remembered (a
bounded record, the oldest forgotten first, everything after `heal_forget_s`) and probed again
at a doubling, jittered interval (`heal_first_retry_s` up to `heal_max_retry_s`): a partition of
any length is noticed within about a minute of its end, for a few probes per lost peer. A lost
peer that answers, or that a neighbour names alive, triggers the node's merge lookup.

A minute was too slow where it matters most: nine real processes, a group cut off for 45 s,
took 8-12 s after the heal to merge (their few records all lost at once had backed off to
~30 s together). Losing several peers at once (`burst` within `burst_window_s`, or in a
small ring at least as many as the leaf set still holds) is what a partition looks like from
inside, so it starts a sweep: one lost peer more, the one tried longest ago, is probed every
`sweep_s` for `sweep_for_s`. The heal is then noticed within
about `sweep_s` of its end, by whichever node of either side sweeps first, for one probe per
`sweep_s` per node while it lasts (a crash of several peers at once pays it too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

INF = float("inf")
_LONG_AGO = -INF  # one float object for every record's "never", not one each


class LostPeer:
    __slots__ = ("lost_at", "next_try", "interval", "last_try", "told")

    def __init__(self, lost_at: float, next_try: float, interval: float,
                 told: bool = False) -> None:
        self.lost_at = lost_at
        self.next_try = next_try
        self.interval = interval  # un-jittered wait before the retry after next_try
        self.last_try = lost_at
        self.told = told  # others told us it died: retried once on schedule (`remember`)

    def retry_early(self, now: float, gap: float) -> bool:
        """Someone named this peer alive: retry it now, unless it was tried within `gap`."""
        if now - self.last_try < gap:
            return False
        self.last_try = now
        return True


@dataclass(frozen=True, slots=True)
class Sweep:
    """When losses look like a partition, and how the record is swept then (the values:
    `OverlayConfig.heal_burst` and the three after it)."""

    burst: int
    burst_window_s: float
    every_s: float
    for_s: float


class LostPeers(dict[int, LostPeer]):
    """Lost peers by id, in the order they were first lost (the order retries go out in).

    A dict itself, because the node asks "is this peer lost?" for every peer it hears from."""

    __slots__ = ("size", "forget_s", "first_retry_s", "max_retry_s", "sweep", "_losses",
                 "sweep_until", "next_sweep")

    def __init__(self, size: int, forget_s: float, first_retry_s: float, max_retry_s: float,
                 sweep: Sweep | None = None) -> None:
        super().__init__()
        self.size = size
        self.forget_s = forget_s
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.sweep = sweep  # None: never swept
        # The times of the latest `sweep.burst` losses, oldest first. A short list, made on the
        # first loss: a deque with a `maxlen` costs ~760 bytes, and most nodes never lose a peer
        # (the simulator holds this record for every node).
        self._losses: list[float] | None = None
        self.sweep_until = _LONG_AGO
        self.next_sweep = INF

    def remember(self, peer: int, now: float, jitter: Callable[[float], float],
                 left: int, told: bool = False, scheduled: bool = True) -> float:
        """Record `peer` as lost now (a full record forgets the peer lost longest ago);
        return when it is first retried (or swept). `left`: the peers the leaf set still holds.
        `told`: we checked it because others said it died, a crash they agree on. It counts
        toward no burst, and it is retried once, after `first_retry_s`, not at a doubling
        interval for `forget_s`: the peers that found it themselves keep retrying it, a node
        named alive is retried at once (`LostPeer.retry_early`), and a sweep retries it too.
        Under churn at 1,000 nodes every holder of every crashed node retried it for an hour:
        0.4 probes per node per second, an eighth of all maintenance messages; six retries,
        over two minutes, still cost half of that. The one retry is for a verifying probe lost
        to a partition that timed out just after the heal: not retried at all, such a peer
        stayed out of three leaf sets for 12 s. Not `scheduled`: not even that one retry, and
        no burst either (a table entry outside the leaf set, whose neighbours retry it).

        A sweep needs `sweep.burst` losses within the window, or fewer when that many are not
        left to lose: two nodes of four, cut off from the other two for 12 s, each lost two
        peers, never swept, and their doubling retries (2, 4, 8 s apart) found the heal up to
        6 s late on real processes."""
        if peer not in self and len(self) >= self.size:
            del self[min(self, key=lambda p: self[p].lost_at)]
        losses, sweep = self._losses, self.sweep
        if losses is None:
            losses = self._losses = []
        told = told or not scheduled
        if not told:
            losses.append(now)
            if len(losses) > (sweep.burst if sweep else 1):
                del losses[0]
        burst = sweep is not None and not told and sum(
            now - t <= sweep.burst_window_s for t in losses) >= min(sweep.burst, left + 1)
        first_try = now + jitter(self.first_retry_s) if scheduled else INF
        self[peer] = LostPeer(now, first_try, self.first_retry_s, told)
        if burst:
            assert sweep is not None
            self.sweep_until = now + sweep.for_s
            if self.next_sweep == INF:
                self.next_sweep = now + jitter(sweep.every_s)
        return min(first_try, self.next_sweep)

    def lost_within(self, peer: int, now: float, window: float) -> bool:
        """Was `peer` lost less than `window` ago?"""
        record = self.get(peer)
        return record is not None and now - record.lost_at < window

    def due(self, now: float, jitter: Callable[[float], float]) -> list[int]:
        """Forget the peers silent too long; return the peers to retry now, in record order,
        each with its next retry set a doubled (and `jitter`ed) interval later."""
        for peer in [p for p, rec in self.items() if now - rec.lost_at > self.forget_s]:
            del self[peer]
        retry: list[int] = []
        for peer, rec in self.items():
            if rec.next_try <= now:
                rec.last_try = now
                if rec.told:
                    rec.next_try = INF  # the one scheduled retry of a death others agreed on
                else:
                    rec.interval = min(rec.interval * 2, self.max_retry_s)
                    rec.next_try = now + jitter(rec.interval)
                retry.append(peer)
        if self.next_sweep <= now:
            self.next_sweep = INF
            if now < self.sweep_until and self and self.sweep is not None:
                self.next_sweep = now + jitter(self.sweep.every_s)
                peer = min(self, key=lambda p: self[p].last_try)
                if peer not in retry:
                    self[peer].last_try = now
                    retry.append(peer)
        return retry

    def soonest(self) -> float:
        """When the next retry (or sweep) is due (INF when nobody is lost)."""
        return min(min((rec.next_try for rec in self.values()), default=INF), self.next_sweep)
