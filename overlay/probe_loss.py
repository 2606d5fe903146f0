"""How many unanswered probes in a row make a peer failed: as many as the loss this node sees.

A probe goes unanswered when the peer is dead, or when the probe or its answer is lost. With a
loss rate p per message, a probe exchange fails with q = 1 - (1 - p)^2 and a live peer misses
n probes in a row with probability q^n: with two probes (the configured floor) that is 0.16%
of the checks at 2% loss (q ~ 4%) and 0.95% at 5% (q ~ 10%). Every false verdict takes a live
node out of leaf sets and tables, puts lookups at the wrong root until it is heard again, and
alarms the neighbours (more probes, more false verdicts). MSPastry tunes its probing to the
observed loss rate for the same reason; here the number of probes is the knob: the smallest n
with q^n <= `false_alarm`, never below the purpose's floor nor above `cap`.

p is measured on what a node hears from peers known to be alive: a probe answered at attempt
k followed k - 1 lost exchanges (one message lost each); a routed hop acknowledged is an
exchange that went through, one unacknowledged whose peer then answered the probe it caused is
one more lost; and the heartbeats of an immediate neighbour, sent at a fixed period, show each
one missed as a gap. Probes that end unanswered are not counted (the peer may well be dead),
nor probes sent only once (their losses are invisible). Counts are halved when they pass
`window` messages, so the estimate follows the network. Once a loss is seen the estimate leans
high, (lost + 1) / sent, and is taken over at least `window` / 8 messages (one early loss is
not a 50% loss rate): a false verdict costs more than a slower true one. With no loss nothing
is ever counted lost and the floors apply unchanged.
"""

from __future__ import annotations

from math import ceil, log


class ProbeLoss:
    __slots__ = ("false_alarm", "cap", "window", "lost", "total", "needed")

    def __init__(self, false_alarm: float, cap: int, window: int = 512) -> None:
        self.false_alarm = false_alarm
        self.cap = cap
        self.window = window
        self.lost = 0  # messages lost...
        self.total = 0  # ...of this many sent
        self.needed = 0  # probes that keep false verdicts under `false_alarm` (0: any floor)

    def exchanges(self, lost: int, answered: int = 1) -> None:
        """A live peer missed `lost` exchanges (a request and its answer) and answered
        `answered`."""
        self._count(lost, lost + 2 * answered)

    def messages(self, lost: int, arrived: int = 1) -> None:
        """Of the one-way messages a live peer sent, `lost` went missing and `arrived` came."""
        self._count(lost, lost + arrived)

    def _count(self, lost: int, total: int) -> None:
        self.total += total
        if not lost and not self.lost:
            if self.total > self.window:
                self.total //= 2
            return  # nothing lost yet: the floors apply
        self.lost += lost
        if self.total > self.window:
            self.lost //= 2
            self.total //= 2
        if not self.lost:
            self.needed = 0
            return
        p = (self.lost + 1) / max(self.total, self.window // 8)
        q = 1.0 - (1.0 - p) ** 2
        self.needed = self.cap if q >= 1.0 else min(
            self.cap, ceil(log(self.false_alarm) / log(q) - 1e-9))

    def attempts(self, floor: int) -> int:
        """Unanswered probes in a row after which a peer is declared failed."""
        needed = self.needed
        return needed if needed > floor else floor
