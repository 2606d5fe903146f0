"""A ring formed without joins: every node's state computed from the truth.

Joining 100,000 nodes one by one through the protocol is the simulator's largest cost (about
570 events a node, most of them the proximity searches of a ring that grows a hundred
thousand times over in simulated seconds). An experiment about what comes after the join
(churn, a partition, traffic at scale) can start instead from the state a join would aim
for, as ring simulators offer (PeerSim's and OverSim's bootstrap initialisers):
- each leaf set holds the L/2 nearest ids on each side, exactly;
- each routing-table cell holds the nearest node, by the network model's delay, of those
  that may fill it: proximity neighbour selection at its best, with the round trip the cell
  records twice the one-way delay without jitter.

So lookups on a formed ring take somewhat shorter paths than on a joined one (the protocol's
searches find a near node, not always the nearest). Everything after the start is the
protocol's own: heartbeats, table probes, repairs, joins and crashes. `--formed` in `iris
sim` and `scripts/bench_ring.py`.

The nearest candidate of a cell is found in a grid over the plane per group of candidates
(a group is every node sharing a prefix of digits), so forming a ring of N nodes costs about
15 log16(N) grid look-ups a node.
"""

from __future__ import annotations

from collections.abc import Iterable

from overlay.ids import BASE, DIGIT_BITS, ID_BITS
from simulations.nearest import Grid, nearest_of

BRUTE_FORCE = 32
"""Groups of up to this many candidates are searched one by one, larger ones in a grid."""


def formed_state(positions: dict[int, complex], leaf_size: int, plane: float,
                 min_round_trip: float, per_unit: float
                 ) -> Iterable[tuple[int, list[int], list[tuple[int, float]]]]:
    """(node, leaf-set members, table entries with round trips) for every node placed at
    `positions`: the one-way delay between two nodes is `min_round_trip / 2 + distance *
    per_unit` (`simulations.network`, without its jitter)."""
    ids = sorted(positions)
    count = len(ids)
    half = leaf_size // 2
    # The groups of each prefix length, and a grid for each large one, made when first asked.
    groups: list[dict[int, list[tuple[complex, int]]]] = []
    length = 0
    while True:
        shift = ID_BITS - DIGIT_BITS * length
        by_prefix: dict[int, list[tuple[complex, int]]] = {}
        for node in ids:
            by_prefix.setdefault(node >> shift, []).append((positions[node], node))
        groups.append(by_prefix)
        if length * DIGIT_BITS >= ID_BITS or all(len(g) == 1 for g in by_prefix.values()):
            break
        length += 1
    grids: dict[tuple[int, int], Grid] = {}

    def nearest(level: int, prefix: int, where: complex) -> tuple[float, int] | None:
        points = groups[level].get(prefix)
        if points is None:
            return None
        if len(points) <= BRUTE_FORCE:
            return nearest_of(points, where)
        grid = grids.get((level, prefix))
        if grid is None:
            grid = grids[(level, prefix)] = Grid.of(points, plane)
        return grid.nearest(where)

    for i, node in enumerate(ids):
        side = min(half, count - 1)
        leaf = [ids[(i + k) % count] for k in range(1, side + 1)]
        leaf += [ids[(i - k) % count] for k in range(1, side + 1)]
        where = positions[node]
        entries: list[tuple[int, float]] = []
        row = 0
        while row + 1 < len(groups) and len(groups[row][node >> ID_BITS - DIGIT_BITS * row]) > 1:
            own = node >> ID_BITS - DIGIT_BITS * (row + 1)
            base = own & ~(BASE - 1)
            for digit in range(BASE):
                if base | digit == own:
                    continue
                found = nearest(row + 1, base | digit, where)
                if found is not None:
                    entries.append((found[1], min_round_trip + 2 * found[0] * per_unit))
            row += 1
        yield node, leaf, entries
