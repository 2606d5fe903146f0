"""The prefix routing table: 32 rows x 16 columns, one node per cell, nearest first.

Cell (r, c) holds a node that shares the owner's first r digits and whose digit r is c. When
several nodes fit a cell the one with the lowest measured round-trip time wins (Pastry's
proximity preference); a node whose round trip is not measured yet counts as infinitely far.
An entry's round trip is the least measured (one sample of a candidate must beat it).

Only filled cells take room. In a ring of N nodes the first log16(N) rows are nearly full and
the row below holds a couple of nodes (at N = 10,000: ~45 entries in rows 0-2, ~2 in row 3,
rarely one in row 4), so a row per allocated level, 16 cells of an id and a round trip each,
spent a fifth of a table on empty cells. The entries sit in cell order (row by row, column by
column) in one list, their round trips in one packed array of single-precision floats beside
it (7 digits are plenty for a round trip; with doubles, `bench_ring.py --nodes 10000`
measured 4,971 bytes per node instead of 4,658), and one integer has bit r * 16 + c set for
each filled cell (r, c): an entry's place in the list is the number of filled cells before
its own.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from overlay.ids import BASE, DIGIT_BITS, ID_BITS, digit, shared_prefix_len

UNKNOWN_RTT = float("inf")
_ROW_BITS = (1 << BASE) - 1
_STAMP_MASK = 0xFFFF  # `RoutingTable.heard`: seconds modulo 2^16


def _index(owner: int, node: int) -> int:
    """Where the cell of `node` (not `owner`) sits in `owner`'s table: row * BASE + column.
    `cell_of` in one step, for the table's own lookups: they run for every peer heard."""
    row = (ID_BITS - (node ^ owner).bit_length()) >> 2
    return row * BASE + ((node >> (ID_BITS - DIGIT_BITS * (row + 1))) & (BASE - 1))


class RoutingTable:
    __slots__ = ("owner", "nodes", "rtts", "heard", "filled_cells", "rows")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.nodes: list[int] = []  # the entries, in cell order
        self.rtts = array("f")  # their round trips, packed: no float object per entry
        # When each entry last spoke to us (`consider`): the clock's whole second, modulo
        # 2^16, in two bytes (a time per entry in a float cost ~390 bytes per node at 10,000
        # nodes). Read as an age (`silent_for`), good for ages under 18 hours.
        self.heard = array("H")
        self.filled_cells = 0  # bit r * BASE + c set: cell (r, c) holds an entry
        # Rows in use: one past the deepest row that ever held an entry (a node's estimate of
        # the rows worth searching, and its lazy repair, look no deeper).
        self.rows = 0

    def cell_of(self, node: int) -> tuple[int, int]:
        row = shared_prefix_len(self.owner, node)
        return row, digit(node, row)

    def get(self, row: int, col: int) -> int | None:
        i = row * BASE + col
        filled = self.filled_cells
        if filled >> i & 1:
            return self.nodes[(filled & ((1 << i) - 1)).bit_count()]
        return None

    def __contains__(self, node: object) -> bool:
        if not isinstance(node, int) or node == self.owner:
            return False
        i = _index(self.owner, node)
        filled = self.filled_cells
        return bool(filled >> i & 1) and self.nodes[(filled & ((1 << i) - 1)).bit_count()] == node

    def __len__(self) -> int:
        return len(self.nodes)

    def rtt_of(self, node: int) -> float:
        entry, rtt = self.incumbent(node)
        return rtt if entry == node else UNKNOWN_RTT

    def incumbent(self, node: int) -> tuple[int | None, float]:
        """The entry of the cell `node` (not the owner) would occupy, or None, and its round
        trip (`UNKNOWN_RTT` for an empty cell)."""
        i = _index(self.owner, node)
        filled = self.filled_cells
        if filled >> i & 1:
            k = (filled & ((1 << i) - 1)).bit_count()
            return self.nodes[k], self.rtts[k]
        return None, UNKNOWN_RTT

    def consider(self, node: int, rtt: float | None = None, now: float = 0.0) -> bool:
        """`node` spoke to us at `now`: offer it for its cell; keep it if the cell is empty or
        it is nearer.

        A measured `rtt` for the incumbent lowers its recorded one (the least seen: queueing
        and jitter only ever add to the path's delay, so the minimum is the estimate that noise
        does not flip back and forth). Returns True when the cell changed.
        """
        owner = self.owner
        if node == owner:
            return False
        # `_index`, inlined: this runs for every message from a peer that is alive.
        row = (ID_BITS - (node ^ owner).bit_length()) >> 2
        i = row * BASE + ((node >> (ID_BITS - DIGIT_BITS * (row + 1))) & (BASE - 1))
        filled = self.filled_cells
        k = (filled & ((1 << i) - 1)).bit_count()
        stamp = int(now) & _STAMP_MASK
        if not filled >> i & 1:
            self.nodes.insert(k, node)
            self.rtts.insert(k, UNKNOWN_RTT if rtt is None else rtt)
            self.heard.insert(k, stamp)
            self.filled_cells = filled | 1 << i
            if i >= self.rows * BASE:
                self.rows = i // BASE + 1
            return True
        nodes = self.nodes
        if nodes[k] == node:
            self.heard[k] = stamp
            if rtt is not None and rtt < self.rtts[k]:
                self.rtts[k] = rtt  # the least round trip seen: jitter only adds
            return False
        if rtt is None or rtt >= self.rtts[k]:
            return False
        nodes[k] = node
        self.rtts[k] = rtt
        self.heard[k] = stamp
        return True

    def cell_free(self, node: int) -> bool:
        """Is the cell `node` would occupy empty?"""
        if node == self.owner:
            return False
        return not self.filled_cells >> _index(self.owner, node) & 1

    def _place(self, node: int) -> tuple[int, int] | None:
        """Where entry `node` sits: (its cell's bit, its place in `nodes`); None if it is
        not an entry."""
        if node == self.owner:
            return None
        i = _index(self.owner, node)
        filled = self.filled_cells
        if filled >> i & 1:
            k = (filled & ((1 << i) - 1)).bit_count()
            if self.nodes[k] == node:
                return i, k
        return None

    def remove(self, node: int) -> tuple[int, int] | None:
        """Drop `node`; return the cell it held, or None if it held none."""
        place = self._place(node)
        if place is None:
            return None
        i, k = place
        del self.nodes[k]
        del self.rtts[k]
        del self.heard[k]
        self.filled_cells &= ~(1 << i)
        return divmod(i, BASE)

    def _row_span(self, row: int) -> tuple[int, int]:
        """Where the entries of `row` sit in `nodes`: [start, end)."""
        filled, first = self.filled_cells, row * BASE
        start = (filled & ((1 << first) - 1)).bit_count()
        return start, start + (filled >> first & _ROW_BITS).bit_count()

    def row(self, row: int) -> tuple[int, ...]:
        start, end = self._row_span(row)
        return tuple(self.nodes[start:end])

    def row_rtts(self, row: int) -> Iterator[tuple[int, float]]:
        """(node, round trip) for every filled cell of `row`, by column."""
        start, end = self._row_span(row)
        return zip(self.nodes[start:end], self.rtts[start:end], strict=True)

    def entries(self) -> Iterator[int]:
        return iter(self.nodes)

    def silent_for(self, node: int, now: float) -> int | None:
        """Whole seconds since entry `node` last spoke to us (it spoke within the second
        before or after that age); None if it is not an entry."""
        place = self._place(node)
        return None if place is None else (int(now) - self.heard[place[1]]) & _STAMP_MASK

    def filled(self) -> Iterator[tuple[int, int, int]]:
        """(row, column, node) for every filled cell."""
        filled = self.filled_cells
        for node in self.nodes:
            i = (filled & -filled).bit_length() - 1  # the lowest filled cell left
            filled &= filled - 1
            yield i // BASE, i % BASE, node
