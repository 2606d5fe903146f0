"""Pastry's routing rule: where a message for a key goes next, from one node's own state.

Pure: it reads a leaf set and a routing table and changes nothing, so the node routes with it
and the simulator's checkers walk it hop by hop without sending anything.

1. A key within the leaf set's range goes to the numerically closest of the leaf set and the
   node itself: the leaf set knows that stretch of the ring exactly.
2. Otherwise the table cell [shared prefix][next digit of the key]: one more digit in common.
3. Failing that (the cell is empty or avoided), any known node with at least as long a
   prefix in common that is numerically closer: rare, and it still makes progress.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import chain

from overlay.ids import digit, ring_distance, shared_prefix_len
from overlay.leafset import LeafSet
from overlay.routing_table import RoutingTable


def next_hop(
    leaf: LeafSet, table: RoutingTable, key: int, avoid: Collection[int] = ()
) -> int | None:
    """The node a message for `key` goes to next, skipping the nodes in `avoid`; None when
    the owner of `leaf` and `table` is the root for `key`."""
    owner = leaf.owner
    if leaf.in_range(key):
        best = leaf.closest(key, avoid)
        return None if best == owner else best
    row = shared_prefix_len(owner, key)
    cell = table.get(row, digit(key, row))
    if cell is not None and cell not in avoid:
        return cell
    # Rare case: any known node at least as long a prefix and numerically closer.
    best = owner
    best_d = ring_distance(best, key)
    for node in chain(leaf.members(), table.entries()):
        if node in avoid or shared_prefix_len(node, key) < row:
            continue
        d = ring_distance(node, key)
        if d < best_d or (d == best_d and node < best):
            best, best_d = node, d
    return None if best == owner else best


def first_choice(leaf: LeafSet, table: RoutingTable, key: int) -> int | None:
    """The node rules 1 and 2 pick for `key` when nobody is avoided (the owner itself when
    it is the closest in its leaf set; None for an empty table cell)."""
    if leaf.in_range(key):
        return leaf.closest(key)
    row = shared_prefix_len(leaf.owner, key)
    return table.get(row, digit(key, row))
