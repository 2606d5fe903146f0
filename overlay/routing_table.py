"""The prefix routing table: 32 rows x 16 columns, one node per cell, nearest first.

Cell (r, c) holds a node that shares the owner's first r digits and whose digit r is c. When
several nodes fit a cell the one with the lowest measured round-trip time wins (Pastry's
proximity preference); a node whose round trip is not measured yet counts as infinitely far.
An entry's round trip is the least measured (one sample of a candidate must beat it).

Rows are allocated on first use: in a ring of N nodes only about log16(N) rows ever fill, so a
table costs a few hundred bytes, not 512 slots.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from overlay.ids import BASE, DIGIT_BITS, ID_BITS, digit, shared_prefix_len

UNKNOWN_RTT = float("inf")
_UNKNOWN_ROW = [UNKNOWN_RTT] * BASE


class RoutingTable:
    __slots__ = ("owner", "rows", "rtts", "size")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.rows: list[list[int | None]] = []
        self.rtts: list[array[float]] = []  # packed doubles: no float object per cell
        self.size = 0

    def cell_of(self, node: int) -> tuple[int, int]:
        row = shared_prefix_len(self.owner, node)
        return row, digit(node, row)

    def get(self, row: int, col: int) -> int | None:
        if row < len(self.rows):
            return self.rows[row][col]
        return None

    def __contains__(self, node: object) -> bool:
        if not isinstance(node, int) or node == self.owner:
            return False
        row, col = self.cell_of(node)
        return row < len(self.rows) and self.rows[row][col] == node

    def __len__(self) -> int:
        return self.size

    def rtt_of(self, node: int) -> float:
        row, col = self.cell_of(node)
        if row < len(self.rows) and self.rows[row][col] == node:
            return self.rtts[row][col]
        return UNKNOWN_RTT

    def consider(self, node: int, rtt: float | None = None) -> bool:
        """Offer `node` for its cell; keep it if the cell is empty or it is nearer.

        A measured `rtt` for the incumbent lowers its recorded one (the least seen: queueing
        and jitter only ever add to the path's delay, so the minimum is the estimate that noise
        does not flip back and forth). Returns True when the cell changed.
        """
        diff = node ^ self.owner
        if not diff:
            return False
        row = (ID_BITS - diff.bit_length()) >> 2  # cell_of, inlined: this is a hot path
        col = (node >> (ID_BITS - DIGIT_BITS * (row + 1))) & (BASE - 1)
        while len(self.rows) <= row:
            self.rows.append([None] * BASE)
            self.rtts.append(array("d", _UNKNOWN_ROW))
        cells = self.rows[row]
        current = cells[col]
        if current == node:
            if rtt is not None and rtt < self.rtts[row][col]:
                self.rtts[row][col] = rtt  # the least round trip seen: jitter only adds
            return False
        if current is None:
            cells[col] = node
            self.rtts[row][col] = UNKNOWN_RTT if rtt is None else rtt
            self.size += 1
            return True
        if rtt is not None and rtt < self.rtts[row][col]:
            cells[col] = node
            self.rtts[row][col] = rtt
            return True
        return False

    def cell_free(self, node: int) -> bool:
        """Is the cell `node` would occupy empty?"""
        if node == self.owner:
            return False
        row, col = self.cell_of(node)
        return row >= len(self.rows) or self.rows[row][col] is None

    def remove(self, node: int) -> tuple[int, int] | None:
        """Drop `node`; return the cell it held, or None if it held none."""
        if node == self.owner:
            return None
        row, col = self.cell_of(node)
        if row < len(self.rows) and self.rows[row][col] == node:
            self.rows[row][col] = None
            self.rtts[row][col] = UNKNOWN_RTT
            self.size -= 1
            return row, col
        return None

    def row(self, row: int) -> tuple[int, ...]:
        if row >= len(self.rows):
            return ()
        return tuple(n for n in self.rows[row] if n is not None)

    def entries(self) -> Iterator[int]:
        for cells in self.rows:
            for node in cells:
                if node is not None:
                    yield node

    def cells(self) -> Iterator[tuple[int, int, int]]:
        """(row, column, node) for every filled cell."""
        for r, cells in enumerate(self.rows):
            for c, node in enumerate(cells):
                if node is not None:
                    yield r, c, node
