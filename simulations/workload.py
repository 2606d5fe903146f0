"""Lookups as real routed messages, and the per-node app that records where they end.

A lookup is a `Lookup` payload routed toward a random key from a random active node, through
the same hop-by-hop acknowledged routing that application traffic uses. It is correct when the
node that delivers it is, at that moment, the live active node numerically closest to the key.
"""

from __future__ import annotations

from overlay.app import OverlayApp
from overlay.ids import ID_BITS
from overlay.messages import Lookup
from overlay.node import OverlayNode
from overlay.wire import Message
from simulations.checkers import true_root
from simulations.world import World


class RingApp(OverlayApp):
    """The app each simulated node runs in the ring scenarios."""

    __slots__ = ("sim", "node_id")

    def __init__(self, sim: World, node: OverlayNode) -> None:
        self.sim = sim
        self.node_id = node.id

    def activated(self) -> None:
        self.sim.mark_active(self.node_id)

    def deliver(self, key: int, payload: Message, origin: int, hops: int) -> None:
        if isinstance(payload, Lookup):
            self.sim.lookups.delivered(self.node_id, key, payload.tag, hops)


class LookupTracker:
    """Issues lookups and scores their deliveries against the simulator's truth."""

    def __init__(self, sim: World) -> None:
        self.sim = sim
        self.reset()

    def reset(self) -> None:
        """Forget every lookup so far: a scenario scores each phase on its own."""
        self.pending: dict[int, tuple[int, int, float]] = {}  # tag -> (key, source, sent at)
        self.issued = 0
        self.correct = 0
        self.wrong = 0
        self.duplicates = 0
        self.delivered_count = 0
        self.hops_total = 0
        self.hops_max = 0
        # Over the lookups delivered away from their source: route delay against direct delay
        net = getattr(self.sim, "net", None)  # the engine's network model, for the delays
        self.delays = DelayStretch(net.config.jitter_s if net is not None else 0.0)

    def issue(self) -> None:
        sim = self.sim
        if not sim.active:
            return
        src = sim.random_active()
        key = sim.rng.getrandbits(ID_BITS)
        tag = self.issued
        self.issued += 1
        self.pending[tag] = (key, src, sim.now)
        sim.call(src, lambda node: node.route(key, Lookup(src, tag), sim.now))

    def delivered(self, at: int, key: int, tag: int, hops: int) -> None:
        sent = self.pending.pop(tag, None)
        if sent is None:
            self.duplicates += 1
            return
        _, src, sent_at = sent
        net = getattr(self.sim, "net", None)  # the engine's network model, for the delays
        if net is not None and src != at and src in net.positions and at in net.positions:
            self.delays.add(self.sim.now - sent_at, net.base_delay(src, at))
        if at == true_root(self.sim, key):
            self.correct += 1
        else:
            self.wrong += 1
        self.delivered_count += 1
        self.hops_total += hops
        self.hops_max = max(self.hops_max, hops)

    def schedule(self, count: int, rate: float) -> float:
        """Issue `count` lookups at `rate` per simulated second from now; returns the end.

        One pending event at a time (each issue schedules the next), so a million lookups
        do not sit in the event heap at once."""
        sim = self.sim
        start = sim.now
        sent = 0

        def next_lookup() -> None:
            nonlocal sent
            self.issue()
            sent += 1
            if sent < count:
                sim.at(start + sent / rate, next_lookup)

        if count > 0:
            sim.at(start, next_lookup)
        return start + count / rate

    @property
    def done(self) -> bool:
        return not self.pending

    def summary(self) -> dict[str, float | int | None]:
        delivered = self.delivered_count
        return {
            "lookups": self.issued,
            "correct_ratio": self.correct / self.issued if self.issued else 0.0,
            "lost": len(self.pending),
            "wrong_root": self.wrong,
            "duplicates": self.duplicates,
            "mean_hops": self.hops_total / delivered if delivered else 0.0,
            "max_hops": self.hops_max,
            **self.delays.figures("lookup"),
        }


class DelayStretch:
    """How much longer messages took than a direct message would: the sums behind the three
    figures (`figures`), taken message by message. A run keeps five numbers, not a record per
    message: a benchmark's 100,000 lookups over 10,000 nodes kept about 1,100 bytes per node
    as tuples of floats (200 as packed arrays), which the figure of memory per node counted as
    the nodes' own. Each sum is taken in the order the messages arrive, as the sums over a
    list of them were, so the figures are the same."""

    __slots__ = ("jitter", "count", "ratio", "ratio_expected", "measured", "expected")

    def __init__(self, jitter: float) -> None:
        self.jitter = jitter  # the mean of the network's exponential jitter
        self.count = 0
        self.ratio = 0.0
        self.ratio_expected = 0.0
        self.measured = 0.0
        self.expected = 0.0

    def add(self, measured: float, direct: float) -> None:
        """One message: its measured delay, and the direct path's without jitter."""
        self.count += 1
        self.ratio += measured / direct
        self.ratio_expected += measured / (direct + self.jitter)
        self.measured += measured
        self.expected += direct + self.jitter

    def figures(self, name: str) -> dict[str, float | None]:
        """The three figures. The measured delay includes every hop's exponential jitter,
        which the direct delay leaves out:
        - `NAME_delay_stretch`: the mean of measured / direct without jitter (the original
          figure);
        - `NAME_delay_stretch_expected`: the mean of measured / (direct + the mean jitter),
          what a direct message would take on average, jitter included; the fair comparison;
        - `NAME_delay_stretch_of_means`: total measured / total expected direct, which is not
          dominated by nearby pairs (a 3 ms pair and a 100 ms pair weigh by their delays).
        """
        n = self.count
        if not n:
            return {f"{name}_delay_stretch": None, f"{name}_delay_stretch_expected": None,
                    f"{name}_delay_stretch_of_means": None}
        return {
            f"{name}_delay_stretch": round(self.ratio / n, 3),
            f"{name}_delay_stretch_expected": round(self.ratio_expected / n, 3),
            f"{name}_delay_stretch_of_means": round(self.measured / self.expected, 3),
        }
