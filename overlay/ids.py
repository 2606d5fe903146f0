"""Node ids and keys: 128-bit integers read as 32 base-16 digits, placed on a ring.

Ids are plain Python ints in memory (cheap to compare, hash and share between the
thousands of nodes of a simulation) and 16 big-endian bytes on the wire.
"""

from __future__ import annotations

import hashlib
import random

ID_BITS = 128
DIGIT_BITS = 4
DIGITS = ID_BITS // DIGIT_BITS  # 32 rows in a routing table
BASE = 1 << DIGIT_BITS  # 16 columns
RING = 1 << ID_BITS
HALF_RING = RING >> 1
MASK = RING - 1


def digit(node_id: int, row: int) -> int:
    """The `row`-th base-16 digit of an id, counting from the most significant."""
    return (node_id >> (ID_BITS - DIGIT_BITS * (row + 1))) & (BASE - 1)


def shared_prefix_len(a: int, b: int) -> int:
    """Number of leading base-16 digits that `a` and `b` have in common (32 if equal)."""
    return (ID_BITS - (a ^ b).bit_length()) >> 2


def clockwise(a: int, b: int) -> int:
    """Distance travelled from `a` to `b` going clockwise (towards larger ids)."""
    return (b - a) & MASK


def ring_distance(a: int, b: int) -> int:
    """Shortest distance between `a` and `b` on the ring."""
    d = (b - a) & MASK
    return d if d <= HALF_RING else RING - d


def closer(key: int, a: int, b: int) -> bool:
    """True when `a` is strictly closer to `key` than `b`, with ties broken by the smaller id.

    Every node and every checker uses this one rule, so "the numerically closest node" is a
    single well-defined node even when a key sits exactly between two ids.
    """
    da = ring_distance(a, key)
    db = ring_distance(b, key)
    return da < db or (da == db and a < b)


def key_for(name: str | bytes) -> int:
    """The 128-bit key of a name: SHA-256 truncated to 128 bits."""
    data = name.encode("utf-8") if isinstance(name, str) else name
    return int.from_bytes(hashlib.sha256(data).digest()[:16], "big")


def random_id(rng: random.Random) -> int:
    """A fresh node id drawn from the caller's random source (seeded in simulations)."""
    return rng.getrandbits(ID_BITS)


def to_bytes(node_id: int) -> bytes:
    return node_id.to_bytes(16, "big")


def from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")
