from overlay.ids import digit, shared_prefix_len
from overlay.routing_table import UNKNOWN_RTT, RoutingTable

OWNER = int("a" * 32, 16)


def node(prefix: str) -> int:
    return int(prefix + "0" * (32 - len(prefix)), 16)


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
    assert t.get(0, 0xB) == near and t.rtt_of(near) == 0.010
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
    assert t.rtt_of(a) == 0.020
    assert not t.consider(b, rtt=0.025)
    t.consider(a, rtt=0.012)
    assert t.rtt_of(a) == 0.012
