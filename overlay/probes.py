"""Probe bookkeeping: the probes a node has in flight, and why each was sent.

A probe is a `Ping` that must be answered by a `Pong` with the same sequence number from the
same peer. At most one probe per peer is in flight: a second reason to probe a peer raises the
purpose of the probe already out instead of sending another, so a peer is never declared
failed twice, and never more quietly than its most serious reason asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Why a peer is probed, in rising order of what a missing answer means.
P_CANDIDATE = 0  # a node we heard of that would improve our state: no answer, not taken
P_HEAL = 1  # a peer lost to failure, retried in case a partition healed
P_CONFIRM = 2  # a tentative leaf-set member of a joiner: no answer, not in the leaf set
P_TABLE = 3  # a routing-table entry checked for liveness and round trip (or a leaf member
# beyond a neighbour that the neighbour's heartbeat did not list)
P_VERIFY = 4  # a peer another node told us is dead: checked before we forget it
P_HELD = 5  # ... told by one of its table holders: once checked, we tell our table and leaf set
P_SUSPECT = 6  # a peer that did not acknowledge a hop
P_NEIGHBOUR = 7  # an immediate neighbour whose heartbeats stopped

TOLD = frozenset((P_VERIFY, P_HELD))
"""Purposes of a probe that checks a death another node told us of."""

RETRIED = frozenset((P_CONFIRM, P_TABLE, P_VERIFY, P_HELD, P_SUSPECT, P_NEIGHBOUR))
"""Purposes probed again before the peer is given up: one lost message must not cost a live
member (nor a joiner a tentative one). Up to `probe_attempts` probes, or more on a lossy network
(`overlay.probe_loss`); a verifying probe only once on a network that loses nothing
(`VERIFIED_ONCE`)."""

VERIFIED_ONCE = TOLD
"""Purposes whose floor is one probe: the notice being verified came from a node that has
already probed the peer `probe_attempts` times."""

ONE_MORE = frozenset((P_SUSPECT,))
"""Purposes probed once more than `probe_attempts` before the peer is given up: a hop left
unacknowledged is no evidence of death by itself (on a lossy network it is mostly a lost
message), unlike the silence of a neighbour's heartbeats; and a node that sees little traffic
measures its loss late (`overlay.probe_loss`). With the floor of two, a live neighbour was
taken out of a leaf set at 2% loss (`iris sim join --loss 0.02 --duplicate 0.01 --wire`,
1,000 nodes, seed 3: its two answers both lost), and a lookup ended at the wrong root."""

FATAL = frozenset((P_TABLE, P_VERIFY, P_HELD, P_SUSPECT, P_NEIGHBOUR))
"""Purposes for which the last unanswered probe declares the peer failed."""


class Probe:
    """One probe in flight."""

    __slots__ = ("seq", "peer", "sent_at", "purpose", "attempt", "want_leaf", "dialled")

    def __init__(
        self, seq: int, peer: int, sent_at: float, purpose: int, attempt: int, want_leaf: bool
    ) -> None:
        self.seq = seq
        self.peer = peer
        self.sent_at = sent_at  # the answer measures the round trip from here
        self.purpose = purpose
        self.attempt = attempt
        self.want_leaf = want_leaf  # the answer that counts is the one carrying a leaf set
        # Written into a dial that connected after it (`OverlayNode.link_up`): `sent_at` was
        # moved to the connect, and its timeout counts from there too.
        self.dialled = False


_NONE: Mapping[int, Probe] = MappingProxyType({})
"""Both maps of a node with no probe in flight: one shared, read-only empty mapping. Most
nodes have none in flight most of the time, and two empty dicts cost 128 bytes a node."""


class Probes:
    """The probes in flight, by sequence number (to match answers) and by peer (one each)."""

    __slots__ = ("limit", "by_seq", "by_peer")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_seq = _NONE
        self.by_peer = _NONE

    def __len__(self) -> int:
        return len(self.by_seq)

    def full(self) -> bool:
        return len(self.by_seq) >= self.limit

    def add(self, probe: Probe) -> None:
        by_seq, by_peer = self.by_seq, self.by_peer
        if not isinstance(by_seq, dict) or not isinstance(by_peer, dict):  # the first in flight
            by_seq, by_peer = {}, {}
            self.by_seq, self.by_peer = by_seq, by_peer
        by_seq[probe.seq] = probe
        by_peer[probe.peer] = probe

    def answer(self, seq: int, src: int, carries_leaf: bool) -> Probe | None:
        """The probe a `Pong` from `src` answers, taken out of flight; None if it answers
        none, or only a first probe that was asked again for the leaf set."""
        probe = self.by_seq.get(seq)
        if probe is None or probe.peer != src:
            return None
        if probe.want_leaf and not carries_leaf:
            return None  # answer to the first probe; the one that carries the leaf set follows
        self._remove(probe)
        return probe

    def expire(self, seq: int) -> Probe | None:
        """The probe whose time ran out, taken out of flight (None if it was answered)."""
        probe = self.by_seq.get(seq)
        if probe is not None:
            self._remove(probe)
        return probe

    def confirming(self) -> bool:
        """Is any tentative leaf-set member still unconfirmed?"""
        return any(p.purpose == P_CONFIRM for p in self.by_seq.values())

    def clear(self) -> None:
        self.by_seq = self.by_peer = _NONE

    def _remove(self, probe: Probe) -> None:
        if len(self.by_seq) == 1:
            # The last one: back to the shared empty mapping (a dict keeps the room of its
            # largest burst, a join's, when emptied).
            self.clear()
            return
        by_seq, by_peer = self.by_seq, self.by_peer
        assert isinstance(by_seq, dict) and isinstance(by_peer, dict)  # a probe is in flight
        del by_seq[probe.seq]
        del by_peer[probe.peer]
