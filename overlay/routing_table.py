"""The prefix routing table: 32 rows x 16 columns, one node per cell, nearest first.

Cell (r, c) holds a node that shares the owner's first r digits and whose digit r is c. When
several nodes fit a cell the one with the lowest measured round-trip time wins (Pastry's
proximity preference); a node whose round trip is not measured yet counts as infinitely far.
An entry's round trip is the least measured (one sample of a candidate must beat it).

Rows are allocated on first use: in a ring of N nodes only about log16(N) rows ever fill, so a
table costs a few hundred bytes, not 512 slots. The cells of every allocated row sit in one
flat list, row after row, and their round trips in one packed array of doubles beside it: a
list and an array per row cost 136 bytes of headers each, which at 10,000 nodes (4-5 rows a
table) was a third of the table.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from overlay.ids import BASE, DIGIT_BITS, ID_BITS, digit, shared_prefix_len

UNKNOWN_RTT = float("inf")
_EMPTY_ROW: list[int | None] = [None] * BASE
_UNKNOWN_ROW = array("d", [UNKNOWN_RTT] * BASE)


def _index(owner: int, node: int) -> int:
    """Where the cell of `node` (not `owner`) sits in `owner`'s table: row * BASE + column.
    `cell_of` in one step, for the table's own lookups: they run for every peer heard."""
    row = (ID_BITS - (node ^ owner).bit_length()) >> 2
    return row * BASE + ((node >> (ID_BITS - DIGIT_BITS * (row + 1))) & (BASE - 1))


class RoutingTable:
    __slots__ = ("owner", "cells", "rtts", "size")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.cells: list[int | None] = []  # cell (r, c) at r * BASE + c
        self.rtts = array("d")  # packed doubles, same layout: no float object per cell
        self.size = 0

    @property
    def rows(self) -> int:
        """How many rows are allocated (every row past them is empty)."""
        return len(self.cells) // BASE

    def cell_of(self, node: int) -> tuple[int, int]:
        row = shared_prefix_len(self.owner, node)
        return row, digit(node, row)

    def get(self, row: int, col: int) -> int | None:
        i = row * BASE + col
        return self.cells[i] if i < len(self.cells) else None

    def __contains__(self, node: object) -> bool:
        if not isinstance(node, int) or node == self.owner:
            return False
        i = _index(self.owner, node)
        cells = self.cells
        return i < len(cells) and cells[i] == node

    def __len__(self) -> int:
        return self.size

    def rtt_of(self, node: int) -> float:
        i = _index(self.owner, node)
        if i < len(self.cells) and self.cells[i] == node:
            return self.rtts[i]
        return UNKNOWN_RTT

    def incumbent(self, node: int) -> tuple[int | None, float]:
        """The entry of the cell `node` (not the owner) would occupy, or None, and its round
        trip (`UNKNOWN_RTT` for an empty cell)."""
        i = _index(self.owner, node)
        if i < len(self.cells):
            return self.cells[i], self.rtts[i]
        return None, UNKNOWN_RTT

    def _grow(self, rows: int) -> None:
        """Allocate rows up to `rows`, exactly sized (a list or array grown in place keeps
        spare room)."""
        more = rows - len(self.cells) // BASE
        self.cells = self.cells + _EMPTY_ROW * more
        self.rtts = self.rtts + _UNKNOWN_ROW * more

    def consider(self, node: int, rtt: float | None = None) -> bool:
        """Offer `node` for its cell; keep it if the cell is empty or it is nearer.

        A measured `rtt` for the incumbent lowers its recorded one (the least seen: queueing
        and jitter only ever add to the path's delay, so the minimum is the estimate that noise
        does not flip back and forth). Returns True when the cell changed.
        """
        if node == self.owner:
            return False
        i = _index(self.owner, node)
        cells = self.cells
        if i >= len(cells):
            self._grow(i // BASE + 1)
            cells = self.cells
        current = cells[i]
        if current == node:
            if rtt is not None and rtt < self.rtts[i]:
                self.rtts[i] = rtt  # the least round trip seen: jitter only adds
            return False
        if current is None:
            cells[i] = node
            self.rtts[i] = UNKNOWN_RTT if rtt is None else rtt
            self.size += 1
            return True
        if rtt is not None and rtt < self.rtts[i]:
            cells[i] = node
            self.rtts[i] = rtt
            return True
        return False

    def cell_free(self, node: int) -> bool:
        """Is the cell `node` would occupy empty?"""
        if node == self.owner:
            return False
        i = _index(self.owner, node)
        return i >= len(self.cells) or self.cells[i] is None

    def remove(self, node: int) -> tuple[int, int] | None:
        """Drop `node`; return the cell it held, or None if it held none."""
        if node == self.owner:
            return None
        i = _index(self.owner, node)
        if i < len(self.cells) and self.cells[i] == node:
            self.cells[i] = None
            self.rtts[i] = UNKNOWN_RTT
            self.size -= 1
            return divmod(i, BASE)
        return None

    def row(self, row: int) -> tuple[int, ...]:
        start = row * BASE
        return tuple(n for n in self.cells[start:start + BASE] if n is not None)

    def row_rtts(self, row: int) -> Iterator[tuple[int, float]]:
        """(node, round trip) for every filled cell of `row`, by column."""
        start = row * BASE
        cells, rtts = self.cells, self.rtts
        for i in range(start, min(start + BASE, len(cells))):
            node = cells[i]
            if node is not None:
                yield node, rtts[i]

    def entries(self) -> Iterator[int]:
        for node in self.cells:
            if node is not None:
                yield node

    def filled(self) -> Iterator[tuple[int, int, int]]:
        """(row, column, node) for every filled cell."""
        for i, node in enumerate(self.cells):
            if node is not None:
                yield i // BASE, i % BASE, node
