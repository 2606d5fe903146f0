"""The leaf set: the L/2 nearest live nodes on each side of a node on the ring.

Each side is a short list ordered by distance from the owner (`left[0]` and `right[0]` are the
immediate neighbours). With at most 8 entries a side, a plain list kept sorted with `bisect` is
both smaller and faster than a balanced sorted container (measured: a `SortedList` of 8 ids
costs about 360 bytes more per side), and the simulator keeps thousands of these.

In a ring of fewer than L+1 nodes a node can sit on both sides at once; that is what makes
"every side holds min(L/2, N-1) nodes" true for small rings too.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Collection

from overlay.ids import MASK, RING, ring_distance


class LeafSet:
    __slots__ = ("owner", "half", "left", "right", "_rmax", "_lmax")

    def __init__(self, owner: int, size: int = 16) -> None:
        if size < 2 or size % 2:
            raise ValueError("leaf set size must be an even number >= 2")
        self.owner = owner
        self.half = size // 2
        self.left: list[int] = []
        self.right: list[int] = []
        # Distance to the farthest member of a full side (RING while the side has room):
        # a node nearer than this belongs in that side.
        self._rmax = RING
        self._lmax = RING

    # -- distances from the owner ------------------------------------------------------
    def _cw(self, node: int) -> int:
        return (node - self.owner) & MASK

    def _ccw(self, node: int) -> int:
        return (self.owner - node) & MASK

    def _changed(self) -> None:
        half = self.half
        self._rmax = self._cw(self.right[-1]) if len(self.right) == half else RING
        self._lmax = self._ccw(self.left[-1]) if len(self.left) == half else RING

    # -- queries ------------------------------------------------------------------------
    def __contains__(self, node: object) -> bool:
        return node in self.right or node in self.left

    def __len__(self) -> int:
        return len(self.members())

    def members(self) -> tuple[int, ...]:
        """Every member once, right side first.

        Built on each call rather than cached: a cached copy cost ~170 bytes per node, and
        while the two sides cannot meet (every ring larger than L + 1 nodes) it is one copy of
        two short lists."""
        right, left = self.right, self.left
        if self._rmax + self._lmax < RING:
            return (*right, *left)  # the sides' arcs do not meet: no node is on both
        seen = dict.fromkeys(right)
        seen.update(dict.fromkeys(left))
        return tuple(seen)

    def complete(self) -> bool:
        """Both sides hold L/2 nodes: the ring is larger than what this set can see."""
        return self._rmax != RING and self._lmax != RING

    def fits(self, node: int) -> bool:
        """Would `add(node)` change this leaf set?"""
        cw = (node - self.owner) & MASK
        if cw == 0:
            return False
        if cw < self._rmax and node not in self.right:
            return True
        return RING - cw < self._lmax and node not in self.left

    def fitting(self, nodes: list[int]) -> set[int]:
        """Those of `nodes` (each of which `fits`) that would be members were all of them
        added: a side with room takes any node, but of several offered at once only the
        nearest stay."""
        half = self.half
        right = sorted({*self.right, *nodes}, key=self._cw)[:half]
        left = sorted({*self.left, *nodes}, key=self._ccw)[:half]
        keep = {*right, *left}
        return {n for n in nodes if n in keep}

    def next_to(self, node: int, within: int = 1) -> bool:
        """Would `node` be one of the `within` members nearest the owner on a side?"""
        cw = (node - self.owner) & MASK
        if cw == 0:
            return False
        right, left = self.right, self.left
        if len(right) < within or cw < self._cw(right[within - 1]):
            return True
        return len(left) < within or RING - cw < self._ccw(left[within - 1])

    def in_range(self, key: int) -> bool:
        """Does `key` fall between the farthest left and the farthest right member?

        A set that is not complete knows the whole ring, so every key is in its range.
        """
        if self._rmax == RING or self._lmax == RING:
            return True
        cw = (key - self.owner) & MASK
        return cw <= self._rmax or RING - cw <= self._lmax

    def closest(self, key: int, avoid: Collection[int] = ()) -> int:
        """The member or owner numerically closest to `key` (ties: the smaller id), skipping
        the nodes in `avoid`.

        For a key inside a complete set's range the answer is one of the two nodes next to
        the key on its arc, found by bisection; otherwise every member is compared.
        """
        if not avoid and self._rmax != RING and self._lmax != RING:
            cw = (key - self.owner) & MASK
            if cw <= self._rmax:
                side, dist, measure = self.right, cw, self._cw
            elif RING - cw <= self._lmax:
                side, dist, measure = self.left, RING - cw, self._ccw
            else:
                side = None
            if side is not None:
                i = bisect_left(side, dist, key=measure)
                before = side[i - 1] if i else self.owner
                if i == len(side):
                    return before
                after = side[i]
                da, db = ring_distance(before, key), ring_distance(after, key)
                return before if da < db or (da == db and before < after) else after
        best = self.owner
        best_d = ring_distance(best, key)
        for side in (self.right, self.left):
            for node in side:
                d = ring_distance(node, key)
                if (d < best_d or (d == best_d and node < best)) and node not in avoid:
                    best, best_d = node, d
        return best

    # -- changes --------------------------------------------------------------------------
    def add(self, node: int) -> bool:
        """Insert `node` on every side it belongs to; evict what falls beyond L/2."""
        cw = (node - self.owner) & MASK
        if cw == 0:
            return False
        changed = False
        half = self.half
        # A full side is cut back by slicing, not `del side[half:]`: the insertion grew the
        # list's room to 16 slots and a list cut in place keeps it (64 bytes a side).
        if cw < self._rmax and node not in self.right:
            insort(self.right, node, key=self._cw)
            if len(self.right) > half:
                self.right = self.right[:half]
            changed = True
        if RING - cw < self._lmax and node not in self.left:
            insort(self.left, node, key=self._ccw)
            if len(self.left) > half:
                self.left = self.left[:half]
            changed = True
        if changed:
            self._changed()
        return changed

    def remove(self, node: int) -> bool:
        changed = False
        if node in self.right:
            self.right.remove(node)
            changed = True
        if node in self.left:
            self.left.remove(node)
            changed = True
        if changed:
            self._changed()
        return changed

    def neighbours(self) -> tuple[int, ...]:
        """The immediate left and right neighbours (one node when they coincide)."""
        out: list[int] = []
        if self.left:
            out.append(self.left[0])
        if self.right and self.right[0] not in out:
            out.append(self.right[0])
        return tuple(out)
