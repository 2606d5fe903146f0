from hypothesis import given
from hypothesis import strategies as st

from overlay.ids import (
    DIGITS,
    RING,
    closer,
    digit,
    from_bytes,
    key_for,
    ring_distance,
    shared_prefix_len,
    to_bytes,
)

ids = st.integers(min_value=0, max_value=RING - 1)


def test_digits_read_most_significant_first():
    x = int("0123456789abcdef" * 2, 16)
    assert [digit(x, i) for i in range(DIGITS)] == list(range(16)) * 2


def test_shared_prefix_len():
    a = int("abcd" + "0" * 28, 16)
    b = int("abce" + "0" * 28, 16)
    assert shared_prefix_len(a, b) == 3
    assert shared_prefix_len(a, a) == 32
    assert shared_prefix_len(0, RING - 1) == 0


@given(ids, ids)
def test_prefix_agrees_with_digits(a, b):
    n = shared_prefix_len(a, b)
    assert all(digit(a, i) == digit(b, i) for i in range(n))
    if n < DIGITS:
        assert digit(a, n) != digit(b, n)


@given(ids, ids)
def test_ring_distance_is_symmetric_and_short(a, b):
    d = ring_distance(a, b)
    assert d == ring_distance(b, a)
    assert 0 <= d <= RING // 2
    assert (d == 0) == (a == b)


def test_distance_wraps_around():
    assert ring_distance(RING - 1, 1) == 2


def test_closer_breaks_ties_by_smaller_id():
    key = 100
    assert closer(key, 90, 110) and not closer(key, 110, 90)
    assert closer(key, 99, 90)


def test_key_for_is_stable_128_bits():
    k = key_for("db")
    assert k == key_for(b"db")
    assert 0 <= k < RING and k != key_for("dc")


@given(ids)
def test_bytes_round_trip(a):
    assert from_bytes(to_bytes(a)) == a
