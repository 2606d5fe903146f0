"""The nearest of a set of points in the simulated plane, found in a grid of square cells.

Used to form a ring from the truth (`simulations.formed`: each table cell's nearest candidate)
and to give a joiner the nearest active node as its seed (`Simulation.near_seeds`).
"""

from __future__ import annotations

import math
from functools import cache

_SPAN = 1 << 20
"""Cell (x, y) is keyed x * _SPAN + y: one int, cheaper to hash than a pair, and no two
cells within reach of the plane share a key."""


@cache
def _rings(side: int) -> list[list[int]]:
    """The key offsets of the cells `radius` cells away (Chebyshev distance), by radius, in
    a grid of `side` x `side` cells (one copy for every grid of that side)."""
    return [[dx * _SPAN + dy for dx in range(-r, r + 1) for dy in range(-r, r + 1)
             if max(abs(dx), abs(dy)) == r] for r in range(side)]


def nearest_of(points: list[tuple[complex, int]], where: complex) -> tuple[float, int]:
    """(distance, node) of the point nearest `where`, one by one (for a few points)."""
    return min((abs(position - where), node) for position, node in points)


class Grid:
    """Points (a position and a node) in `side` x `side` square cells over the plane: the
    nearest point to a position is in the ring of cells around it that first holds a point,
    or the next."""

    __slots__ = ("side", "cell", "cells", "rings")

    def __init__(self, plane: float, side: int) -> None:
        self.side = max(1, side)
        self.cell = plane / self.side
        self.cells: dict[int, list[tuple[complex, int]]] = {}
        self.rings = _rings(self.side)

    @classmethod
    def of(cls, points: list[tuple[complex, int]], plane: float) -> Grid:
        """A grid of about one point a cell, holding `points`."""
        grid = cls(plane, int(math.sqrt(len(points))))
        for position, node in points:
            grid.add(position, node)
        return grid

    def _of(self, where: complex) -> int:
        last = self.side - 1
        return (min(last, max(0, int(where.real / self.cell))) * _SPAN
                + min(last, max(0, int(where.imag / self.cell))))

    def add(self, position: complex, node: int) -> None:
        self.cells.setdefault(self._of(position), []).append((position, node))

    def remove(self, position: complex, node: int) -> None:
        key = self._of(position)
        points = self.cells[key]
        points.remove((position, node))
        if not points:
            del self.cells[key]

    def nearest(self, where: complex) -> tuple[float, int]:
        """(distance, node) of the point nearest `where` (ties: the smaller id);
        (inf, -1) when the grid is empty."""
        centre = self._of(where)
        cells, cell = self.cells, self.cell
        best = (math.inf, -1)
        for radius, ring in enumerate(self.rings):
            for offset in ring:
                points = cells.get(centre + offset)
                if points is not None:
                    for position, node in points:
                        candidate = (abs(position - where), node)
                        if candidate < best:
                            best = candidate
            # A point in a farther ring is at least `radius` cell widths away.
            if best[0] <= radius * cell:
                break
        return best
