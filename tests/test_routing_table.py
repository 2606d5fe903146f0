import random
from array import array

from overlay.ids import digit, shared_prefix_len
from overlay.routing_table import UNKNOWN_RTT, RoutingTable

OWNER = int("a" * 32, 16)


def node(prefix: str) -> int:
    return int(prefix + "0" * (32 - len(prefix)), 16)


def single(rtt: float) -> float:
    """`rtt` as the table keeps it: single precision (an RTT needs no more)."""
    return array("f", [rtt])[0]


def test_cells_follow_prefix_and_digit():
    t = RoutingTable(OWNER)
    n = node("ab")
    assert t.consider(n)
    row, col = t.cell_of(n)
    assert (row, col) == (1, 0xB)
    assert t.get(row, col) == n and n in t and len(t) == 1
    assert shared_prefix_len(OWNER, n) == row and digit(n, row) == col


def test_nearer_node_replaces_incumbent():
    t = RoutingTable(OWNER)
    far, near = node("b1"), node("b2")
    t.consider(far, rtt=0.080)
    assert not t.consider(near)  # unmeasured: does not displace a measured entry
    assert t.consider(near, rtt=0.010)
    assert t.get(0, 0xB) == near and t.rtt_of(near) == single(0.010)
    assert not t.consider(far, rtt=0.050)


def test_remove_and_rows():
    t = RoutingTable(OWNER)
    a, b = node("1"), node("2")
    t.consider(a)
    t.consider(b)
    assert set(t.row(0)) == {a, b}
    assert t.remove(a) == (0, 1)
    assert t.remove(a) is None
    assert t.rtt_of(a) == UNKNOWN_RTT
    assert list(t.entries()) == [b]


def test_owner_is_never_an_entry():
    t = RoutingTable(OWNER)
    assert not t.consider(OWNER)
    assert OWNER not in t
    assert not t.cell_free(OWNER)


def test_an_entry_keeps_the_least_round_trip_seen():
    # Jitter only adds to a path's delay: a later, slower sample does not make the incumbent
    # look farther, so one lucky sample of a candidate cannot flip a cell back and forth.
    t = RoutingTable(OWNER)
    a, b = node("b1"), node("b2")
    t.consider(a, rtt=0.020)
    t.consider(a, rtt=0.030)
    assert t.rtt_of(a) == single(0.020)
    assert not t.consider(b, rtt=0.025)
    t.consider(a, rtt=0.012)
    assert t.rtt_of(a) == single(0.012)


def test_packed_cells_behave_as_a_grid_of_cells():
    # The table keeps only filled cells, found by counting bits: compare it, operation by
    # operation, with a plain grid of (node, rtt) cells that does what the docstring says.
    rng = random.Random(7)
    t = RoutingTable(OWNER)
    grid: dict[tuple[int, int], tuple[int, float]] = {}
    deepest = -1
    pool = [OWNER ^ rng.getrandbits(4 * rng.randrange(1, 33)) for _ in range(300)]
    for _ in range(5000):
        n = rng.choice(pool)
        if n == OWNER:
            continue
        cell = t.cell_of(n)
        held = grid.get(cell)
        if rng.random() < 0.2:
            assert t.remove(n) == (cell if held and held[0] == n else None)
            if held and held[0] == n:
                del grid[cell]
            continue
        rtt = rng.choice([None, rng.random()])
        changed = t.consider(n, rtt)
        measured = UNKNOWN_RTT if rtt is None else rtt
        if held is None:
            grid[cell] = (n, single(measured))
            deepest = max(deepest, cell[0])
            assert changed
        elif held[0] == n:
            grid[cell] = (n, single(measured) if measured < held[1] else held[1])
            assert not changed
        else:
            assert changed == (measured < held[1])
            if changed:
                grid[cell] = (n, single(measured))
        assert t.rows == deepest + 1 and len(t) == len(grid)
        assert list(t.filled()) == [(r, c, grid[r, c][0]) for r, c in sorted(grid)]
        assert all(t.rtt_of(node) == rtt for node, rtt in grid.values())
        r = cell[0]
        assert list(t.row_rtts(r)) == [grid[r, c] for c in range(16) if (r, c) in grid]
        assert t.get(*cell) == (grid[cell][0] if cell in grid else None)
