import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.ids import RING, ring_distance
from overlay.leafset import LeafSet

ids = st.integers(min_value=0, max_value=RING - 1)


def expected_sides(owner, nodes, half):
    others = sorted(set(nodes) - {owner})
    right = sorted(others, key=lambda n: (n - owner) % RING)[:half]
    left = sorted(others, key=lambda n: (owner - n) % RING)[:half]
    return left, right


@given(ids, st.lists(ids, max_size=60), st.sampled_from([2, 4, 8, 16, 32]))
def test_add_keeps_the_nearest_on_each_side(owner, nodes, size):
    leaf = LeafSet(owner, size)
    for n in nodes:
        leaf.add(n)
    left, right = expected_sides(owner, nodes, size // 2)
    assert leaf.left == left
    assert leaf.right == right
    assert owner not in leaf


@given(ids, st.lists(ids, min_size=1, max_size=40), st.data())
def test_remove_then_readd_restores(owner, nodes, data):
    leaf = LeafSet(owner, 8)
    for n in nodes:
        leaf.add(n)
    victim = data.draw(st.sampled_from(nodes))
    leaf.remove(victim)
    assert victim not in leaf
    remaining = [n for n in nodes if n != victim]
    fresh = LeafSet(owner, 8)
    for n in remaining:
        fresh.add(n)
    # Removing never invents members; re-learning the rest gives the exact set.
    assert set(leaf.members()) <= set(fresh.members())
    for n in remaining:
        leaf.add(n)
    assert leaf.left == fresh.left and leaf.right == fresh.right


@given(ids, st.lists(ids, max_size=40), ids)
def test_fits_means_add_changes(owner, nodes, candidate):
    leaf = LeafSet(owner, 8)
    for n in nodes:
        leaf.add(n)
    before = (list(leaf.left), list(leaf.right))
    predicted = leaf.fits(candidate)
    assert leaf.add(candidate) == predicted
    assert ((list(leaf.left), list(leaf.right)) != before) == predicted


@given(ids, st.lists(ids, max_size=40), st.lists(ids, min_size=1, max_size=20))
def test_fitting_is_what_adding_them_all_would_keep(owner, nodes, offered):
    leaf = LeafSet(owner, 8)
    for n in nodes:
        leaf.add(n)
    fit = [n for n in offered if leaf.fits(n)]
    kept = leaf.fitting(fit)
    for n in fit:
        leaf.add(n)
    assert kept == {n for n in fit if n in leaf}


@given(ids, st.lists(ids, max_size=40), ids, st.sampled_from([1, 2, 3]))
def test_next_to_means_among_the_nearest_on_a_side(owner, nodes, candidate, within):
    leaf = LeafSet(owner, 8)
    for n in nodes:
        leaf.add(n)
    predicted = leaf.next_to(candidate, within)
    if candidate == owner or candidate in leaf:
        return
    leaf.add(candidate)
    assert predicted == (candidate in leaf.right[:within] or candidate in leaf.left[:within])


def test_small_ring_members_sit_on_both_sides():
    leaf = LeafSet(50, 16)
    for n in (10, 20, 90):
        leaf.add(n)
    assert leaf.right == [90, 10, 20]
    assert leaf.left == [20, 10, 90]
    assert not leaf.complete()
    assert leaf.in_range(RING // 2)  # an incomplete set knows the whole ring


def test_range_and_closest():
    rng = random.Random(3)
    owner = RING // 3
    nodes = [rng.getrandbits(128) for _ in range(200)]
    leaf = LeafSet(owner, 16)
    for n in nodes:
        leaf.add(n)
    assert leaf.complete()
    assert leaf.in_range(owner + 1)
    assert not leaf.in_range(owner + RING // 2)
    key = leaf.right[3] + 1
    truth = min([owner, *leaf.members()], key=lambda n: (ring_distance(n, key), n))
    assert leaf.closest(key) == truth
    assert leaf.closest(key, avoid={leaf.right[3]}) != leaf.right[3]


def test_size_must_be_even():
    with pytest.raises(ValueError):
        LeafSet(1, 7)


@given(ids, st.lists(ids, min_size=20, max_size=60), ids)
def test_closest_by_bisection_matches_a_full_scan(owner, nodes, key):
    leaf = LeafSet(owner, 16)
    for n in nodes:
        leaf.add(n)
    everyone = [owner, *leaf.members()]
    expected = min(everyone, key=lambda n: (ring_distance(n, key), n))
    if leaf.in_range(key):
        assert leaf.closest(key) == expected
    assert leaf.closest(key, avoid={-1}) == expected  # the scanning path
