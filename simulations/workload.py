"""Lookups as real routed messages, and the per-node app that records where they end.

A lookup is a `Lookup` payload routed toward a random key from a random active node, through
the same hop-by-hop acknowledged routing that application traffic uses. It is correct when the
node that delivers it is, at that moment, the live active node numerically closest to the key.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

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
        self.hops = array("I")  # packed: 4 bytes a lookup, not a list slot
        # Per lookup delivered away from its source: (route delay, direct delay without jitter)
        self.delays = DelayPairs()

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
            self.delays.append(self.sim.now - sent_at, net.base_delay(src, at))
        if at == true_root(self.sim, key):
            self.correct += 1
        else:
            self.wrong += 1
        self.hops.append(hops)

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
        hops = self.hops
        return {
            "lookups": self.issued,
            "correct_ratio": self.correct / self.issued if self.issued else 0.0,
            "lost": len(self.pending),
            "wrong_root": self.wrong,
            "duplicates": self.duplicates,
            "mean_hops": sum(hops) / len(hops) if hops else 0.0,
            "max_hops": max(hops) if hops else 0,
            **delay_stretch("lookup", self.delays, self.sim),
        }


class DelayPairs:
    """(measured delay, direct delay without jitter) per message, in two packed arrays of
    doubles: 16 bytes a pair where a tuple of two floats cost 112. A benchmark's 100,000
    lookups over 10,000 nodes kept about 1,100 bytes per node in tuples, which the figure of
    memory per node then counted as the nodes' own."""

    __slots__ = ("measured", "direct")

    def __init__(self) -> None:
        self.measured = array("d")
        self.direct = array("d")

    def append(self, measured: float, direct: float) -> None:
        self.measured.append(measured)
        self.direct.append(direct)

    def __len__(self) -> int:
        return len(self.measured)

    def __iter__(self) -> Iterator[tuple[float, float]]:
        return zip(self.measured, self.direct, strict=True)


def delay_stretch(name: str, delays: DelayPairs, sim: World) -> dict[str, float | None]:
    """How much longer messages took than a direct message would, three ways.

    `delays` holds (measured delay, direct delay without jitter) per message. The measured
    delay includes every hop's exponential jitter, which the direct delay leaves out:
    - `NAME_delay_stretch`: the mean of measured / direct without jitter (the original figure);
    - `NAME_delay_stretch_expected`: the mean of measured / (direct + the mean jitter), what a
      direct message would take on average, jitter included; the fair comparison;
    - `NAME_delay_stretch_of_means`: total measured / total expected direct, which is not
      dominated by nearby pairs (a 3 ms pair and a 100 ms pair weigh by their delays).
    """
    if not delays:
        return {f"{name}_delay_stretch": None, f"{name}_delay_stretch_expected": None,
                f"{name}_delay_stretch_of_means": None}
    net = getattr(sim, "net", None)
    jitter = net.config.jitter_s if net is not None else 0.0
    n = len(delays)
    return {
        f"{name}_delay_stretch": round(sum(m / d for m, d in delays) / n, 3),
        f"{name}_delay_stretch_expected": round(sum(m / (d + jitter) for m, d in delays) / n, 3),
        f"{name}_delay_stretch_of_means": round(
            sum(m for m, _ in delays) / sum(d + jitter for _, d in delays), 3),
    }
