"""Pastry's routing rule on hand-built state: every hop makes progress toward the key's root."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.ids import RING, closer, shared_prefix_len
from overlay.leafset import LeafSet
from overlay.routing_rule import first_choice, next_hop
from overlay.routing_table import RoutingTable

ids = st.integers(min_value=0, max_value=RING - 1)


def state_of(owner, known, leaf_size=8):
    leaf = LeafSet(owner, leaf_size)
    table = RoutingTable(owner)
    for node in known:
        leaf.add(node)
        table.consider(node)
    return leaf, table


def true_root(nodes, key):
    best = nodes[0]
    for n in nodes[1:]:
        if closer(key, n, best):
            best = n
    return best


def test_a_small_ring_is_all_leaf_set_and_the_closest_node_is_the_root():
    rng = random.Random(1)
    nodes = [rng.getrandbits(128) for _ in range(5)]
    for owner in nodes:
        leaf, table = state_of(owner, nodes)
        for _ in range(50):
            key = rng.getrandbits(128)
            root = true_root(nodes, key)
            assert next_hop(leaf, table, key) == (None if root == owner else root)


@settings(max_examples=200)
@given(ids, st.lists(ids, min_size=1, max_size=80, unique=True), ids)
def test_every_hop_shares_a_longer_prefix_or_is_numerically_closer(owner, known, key):
    leaf, table = state_of(owner, [n for n in known if n != owner])
    nh = next_hop(leaf, table, key)
    if nh is None:
        return
    assert nh != owner
    progress = shared_prefix_len(nh, key) > shared_prefix_len(owner, key)
    assert progress or closer(key, nh, owner)


def test_an_avoided_node_is_never_chosen():
    rng = random.Random(2)
    owner = rng.getrandbits(128)
    known = [rng.getrandbits(128) for _ in range(200)]
    leaf, table = state_of(owner, known)
    for _ in range(200):
        key = rng.getrandbits(128)
        first = next_hop(leaf, table, key)
        if first is None:
            continue
        assert next_hop(leaf, table, key, avoid={first}) != first


def test_first_choice_ignores_nobody_and_names_the_owner_when_it_is_closest():
    rng = random.Random(3)
    owner = rng.getrandbits(128)
    leaf, table = state_of(owner, [rng.getrandbits(128) for _ in range(3)])
    assert first_choice(leaf, table, owner) == owner
    for _ in range(50):
        key = rng.getrandbits(128)
        nh = next_hop(leaf, table, key)
        assert first_choice(leaf, table, key) == (owner if nh is None else nh)
