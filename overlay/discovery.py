"""Finding a node near us before joining (Castro, Druschel, Hu, Rowstron, "Exploiting network
proximity in peer-to-peer overlay networks", 2002: locating a nearby node).

Pastry's join assumes the seed is near the joiner: every node on the join's route hands the
joiner a table row, and those rows hold nodes near the route, so near the seed. A seed
anywhere (the one an operator names, the one a test picks at random) gives rows near it, and
the joiner's own search afterwards walks from their nearest entry through row 0, whose entries
lie close around each node: it cannot travel across the network, and late joiners kept row-0
entries several times as far as the nearest candidates (lookup stretch 2.26 at 10,000
simulated nodes with random seeds, 1.78 with each joiner given its nearest node as its seed).

So the joiner first looks for a node near it, coarse to fine: the seed's leaf set (nodes
adjacent in id, so anywhere in the network) is probed, and the nearest answer is asked for its
deepest table row with a choice (`overlay.proximity`), whose entries are spread widely around
it; the nearest of those for the next row up, whose entries lie closer around it; down to row
0, asked again while it brings a nearer node. The join then goes through the nearest node
found. Each answer carries the answering node's round trip to every node it names, so by the
triangle inequality a candidate whose round trip from it differs from ours to it by more than
the nearest found so far cannot be nearer, and is not probed.
"""

from __future__ import annotations

from overlay.ids import DIGITS, MASK, RING
from overlay.proximity import estimated_size, rows_with_choice

INF = float("inf")

LEAF_PROBES = 8
"""Members of the seed's leaf set probed: the coarse start, nodes anywhere in the network."""

ROW_PROBES = 4
"""Candidates probed of each row asked for, the likeliest nearer first."""

ROW0_ROUNDS = 2
"""Row 0 is asked for again, of each nearer node found, at most this many times in all."""


class Discovery:
    """One joiner's search for a near node; the node sends and receives, this decides."""

    __slots__ = ("best", "best_rtt", "rows", "pending", "asked", "awaiting", "last_row",
                 "probed", "improved")

    def __init__(self, seed: int) -> None:
        self.best = seed
        self.best_rtt = INF
        self.rows: list[int] = []  # rows still to ask for, in order
        self.pending: set[int] = set()  # probed, neither answered nor timed out
        self.asked: int | None = None  # the node last asked for a row...
        self.awaiting = False  # ... whose answer has not come
        self.last_row = -1
        self.probed: set[int] = {seed}
        self.improved = False  # a nearer node was found since the last row was asked for

    def plan(self, seed: int, leaf: tuple[int, ...], leaf_size: int) -> list[int]:
        """The seed answered with its leaf set: the rows to ask for, deepest first, and the
        leaf-set members to probe."""
        size = ring_size_of(seed, leaf, leaf_size)
        deepest = rows_with_choice(size, DIGITS)
        if deepest:
            self.rows = [*range(deepest - 1, 0, -1), *([0] * ROW0_ROUNDS)]
        return self.candidates(leaf, (), LEAF_PROBES)

    def measured(self, peer: int, rtt: float) -> None:
        self.pending.discard(peer)
        if rtt < self.best_rtt:
            if peer != self.best:
                self.improved = True
            self.best, self.best_rtt = peer, rtt

    def lost(self, peer: int) -> None:
        self.pending.discard(peer)

    def next_row(self) -> int | None:
        """The row to ask the nearest node for next, or None: done. Row 0 is asked for again
        only of a node nearer than the last one asked."""
        rows = self.rows
        if not rows or (rows[0] == 0 and self.last_row == 0 and not self.improved):
            return None
        self.improved = False
        self.asked, self.awaiting = self.best, True
        self.last_row = rows.pop(0)
        return self.last_row

    def candidates(self, nodes: tuple[int, ...], rtts: tuple[int, ...], limit: int) -> list[int]:
        """Of the nodes an answer named (with its round trips to them in microseconds, or
        none), those that may be nearer than the nearest found, likeliest first."""
        best, probed = self.best_rtt, self.probed
        hint = rtts if len(rtts) == len(nodes) else ()
        base = self.best_rtt if hint else 0.0  # our round trip to the node that answered
        likely: list[tuple[float, int]] = []
        for i, node in enumerate(nodes):
            if node in probed:
                continue
            # Triangle inequality: rtt(us, node) >= |rtt(answerer, node) - rtt(us, answerer)|.
            bound = abs(hint[i] / 1e6 - base) if hint and hint[i] else 0.0
            if bound < best:
                likely.append((bound, node))
        likely.sort()
        chosen = [node for _, node in likely[:limit]]
        probed.update(chosen)
        return chosen


def ring_size_of(seed: int, leaf: tuple[int, ...], leaf_size: int) -> float:
    """The ring's size as a leaf set (of `seed`) suggests, as `OverlayNode._ring_size` reads
    its own."""
    if len(leaf) < leaf_size:
        return estimated_size(len(leaf), 0, False)
    half = leaf_size // 2
    cw = sorted((m - seed) & MASK for m in leaf)
    span = cw[half - 1] + (RING - cw[half])
    return estimated_size(len(leaf), span, True)
