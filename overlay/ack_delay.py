"""How long to wait for an acknowledgement: Jacobson's estimator, as TCP's retransmission timer.

A node measures how long its hops take to be acknowledged and waits the smoothed mean plus
four mean deviations before it gives a peer up, never less than the configured floors. So a
live peer with a backlog (its acknowledgements late but coming) is not taken for a dead one,
while on an idle network the floors apply and failures are still noticed quickly.
"""

from __future__ import annotations

MAX_ADAPTED_TIMEOUT_S = 10.0  # however slow the acknowledgements, a silent peer is probed by then


class AckDelay:
    __slots__ = ("srtt", "var")

    def __init__(self) -> None:
        self.srtt = -1.0  # smoothed acknowledgement delay (-1: no sample yet)
        self.var = 0.0  # its smoothed mean deviation

    def sample(self, delay: float) -> float:
        """Take one measured delay; return the patience it suggests (mean + 4 deviations,
        capped), which the caller raises to its own floor."""
        if self.srtt < 0:
            self.srtt, self.var = delay, delay / 2
        else:
            self.var = 0.75 * self.var + 0.25 * abs(self.srtt - delay)
            self.srtt = 0.875 * self.srtt + 0.125 * delay
        return min(self.srtt + 4 * self.var, MAX_ADAPTED_TIMEOUT_S)
