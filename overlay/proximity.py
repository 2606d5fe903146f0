"""Proximity neighbour selection: which table rows are worth searching for nearer nodes
(Castro, Druschel, Hu, Rowstron, "Exploiting network proximity in peer-to-peer
overlay networks", 2002).

A cell of row r may hold any node sharing the owner's first r digits and having the cell's
digit next: about N / 16^(r+1) nodes. Rows where that is several nodes (row 0 and row 1 at
N = 1,000) decide how far the first hops of every route travel; deeper rows have one candidate
or none, and there is nothing to choose. A node estimates N from the span of its leaf set (L
nodes over that fraction of the ring) and searches only the rows with a choice.

The search itself is Pastry's row exchange with measuring: ask an entry of row r for its row r
(the answer carries the entry's round trip to each node in it), probe the candidates likely to
be nearer than our own entries, keep the nearer (`RoutingTable.consider`). Nodes near us hold
nodes near us (the triangle inequality), so after a join the nearest entry of each row with a
choice is asked first, then the node its answer made nearest (Castro et al.'s second join
phase); the same search runs again, lighter, when the ring has grown `GROWTH` times since the
last one.
Afterwards every periodic table probe fetches the probed entry's row, and at most one of its
nodes, the likeliest nearer, is probed (`OverlayConfig.proximity_probes`,
`proximity_margin`). A node that takes a measured node into its table tells it the round trip
(`Hello`) when that would win the other's cell for it (`Pong.cell_us`): nearness is mutual.
"""

from __future__ import annotations

from overlay.ids import BASE, RING

CHOICE = 2.0
"""A row is searched when its cells have at least this many candidates each, by estimate."""


def estimated_size(leaf_members: int, span: int, complete: bool) -> float:
    """The ring's size, from a leaf set of `leaf_members` nodes spanning `span` of the ring
    (`complete`: both sides full; otherwise the leaf set holds the whole ring)."""
    if not complete:
        return float(leaf_members + 1)
    return leaf_members * RING / max(span, 1)


def rows_with_choice(size: float, rows: int) -> int:
    """How many of the first rows have a choice of nodes per cell in a ring of `size`."""
    r = 0
    while r < rows and size / BASE ** (r + 1) >= CHOICE:
        r += 1
    return r

GROWTH = 1.4
"""A node searches its table again when its estimate of the ring's size has grown this much
since its last search: a larger ring offers more candidates per cell (2.0, searching half as
often, left the lookup stretch at 1.84 on seeds 1 and 2 at N = 1,000, against 1.77 at 1.4)."""
