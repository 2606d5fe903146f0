"""Invariant checkers over a whole simulated ring, compared with the simulator's ground truth.

Truth is the sorted list of live, active node ids the simulation keeps. Each checker returns a
small result object whose `ok` says whether the invariant holds; scenarios use them as
`sim.run_until` predicates and tests assert on them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from overlay.ids import BASE, ID_BITS, closer, digit, shared_prefix_len
from simulations.world import World


@dataclass
class LeafCheck:
    ok: bool
    checked: int
    wrong: int
    examples: list[str] = field(default_factory=list)


@dataclass
class TableCheck:
    ok: bool
    entries: int
    dead: int
    misplaced: int
    fill_ratio: float


@dataclass
class RoutingCheck:
    ok: bool
    lookups: int
    correct: int
    mean_hops: float
    max_hops: int


def true_leaves(sim: World, node_id: int) -> tuple[list[int], list[int]]:
    """The L/2 live active nodes on each side of `node_id`, nearest first."""
    ids = sim.active
    n = len(ids)
    half = sim.config.leaf_size // 2
    i = ids.bisect_left(node_id)
    own = i < n and ids[i] == node_id
    others = n - 1 if own else n
    count = min(half, others)
    right = [ids[(i + (1 if own else 0) + k) % n] for k in range(count)]
    left = [ids[(i - 1 - k) % n] for k in range(count)]
    return left, right


def true_root(sim: World, key: int) -> int:
    """The live active node numerically closest to `key` (ties: the smaller id)."""
    ids = sim.active
    n = len(ids)
    i = ids.bisect_left(key)
    after, before = ids[i % n], ids[(i - 1) % n]
    return before if closer(key, before, after) else after


def check_leaf_sets(sim: World, limit_examples: int = 5) -> LeafCheck:
    wrong = 0
    examples: list[str] = []
    for node_id in sim.active:
        node = sim.nodes[node_id]
        left, right = true_leaves(sim, node_id)
        if node.leaf.left != left or node.leaf.right != right:
            wrong += 1
            if len(examples) < limit_examples:
                missing = set(left + right) - set(node.leaf.members())
                extra = set(node.leaf.members()) - set(left + right)
                examples.append(f"{node_id:032x}: missing {len(missing)}, extra {len(extra)}")
    return LeafCheck(ok=wrong == 0 and len(sim.active) > 0, checked=len(sim.active), wrong=wrong,
                     examples=examples)


def check_routing_tables(sim: World) -> TableCheck:
    """Every entry live with the right prefix and digit; fill against the best possible."""
    live = sim.nodes
    ids = list(sim.active)
    prefixes: list[set[int]] = []
    row = 0
    while True:
        shift = ID_BITS - 4 * (row + 1)
        if shift < 0:
            break
        level = {i >> shift for i in ids}
        prefixes.append(level)
        if len(level) == len(ids):
            break
        row += 1
    entries = dead = misplaced = filled = possible = 0
    for node_id in ids:
        table = sim.nodes[node_id].table
        for r, c, peer in table.filled():
            entries += 1
            if peer not in live:
                dead += 1
            if shared_prefix_len(node_id, peer) != r or digit(peer, r) != c:
                misplaced += 1
        for r, level in enumerate(prefixes):
            shift = ID_BITS - 4 * (r + 1)
            base = (node_id >> shift) & ~(BASE - 1)
            own = digit(node_id, r)
            for c in range(BASE):
                if c != own and (base | c) in level:
                    possible += 1
                    if table.get(r, c) is not None:
                        filled += 1
    fill = filled / possible if possible else 1.0
    return TableCheck(ok=dead == 0 and misplaced == 0, entries=entries, dead=dead,
                      misplaced=misplaced, fill_ratio=fill)


def walk(sim: World, start: int, key: int, max_hops: int = 64) -> tuple[int | None, int]:
    """Follow next_hop from `start` without sending anything: (end node or None, hops)."""
    current = start
    for hops in range(max_hops + 1):
        node = sim.nodes.get(current)
        if node is None or not node.active:
            return None, hops
        nh = node.next_hop(key)
        if nh is None:
            return current, hops
        current = nh
    return None, max_hops


def check_routing(
    sim: World, lookups: int = 1000, rng: random.Random | None = None
) -> RoutingCheck:
    """Random keys from random nodes, walked through every node's routing state."""
    rng = rng or random.Random(sim.seed + 1)
    ids = sim.active
    if not ids:
        return RoutingCheck(False, 0, 0, 0.0, 0)
    correct = total_hops = max_hops = 0
    for _ in range(lookups):
        start = ids[rng.randrange(len(ids))]
        key = rng.getrandbits(ID_BITS)
        end, hops = walk(sim, start, key)
        total_hops += hops
        max_hops = max(max_hops, hops)
        if end is not None and end == true_root(sim, key):
            correct += 1
    return RoutingCheck(correct == lookups, lookups, correct, total_hops / lookups, max_hops)


def all_ok(sim: World, lookups: int = 300) -> bool:
    """Every checker passes (leaf sets first: it is the cheapest and the most telling)."""
    return (
        check_leaf_sets(sim, limit_examples=0).ok
        and check_routing_tables(sim).ok
        and check_routing(sim, lookups).ok
    )
