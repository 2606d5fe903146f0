"""One timer for many pending requests."""

from iris.core.deadlines import Deadlines


def test_answered_entries_cost_no_timer_and_pending_ones_expire_in_order():
    d = Deadlines()
    pending = {}
    timers = []
    for k in range(10):
        pending[k] = None
        at = d.add(1.0 + k, k, pending)
        if at is not None:
            timers.append(at)
    assert timers == [1.0]  # one timer, at the earliest deadline
    for k in (0, 1, 2, 5):
        del pending[k]  # answered
    expired, at = d.expire(1.0, pending)
    assert expired == [] and at == 4.0  # skips the answered heads, waits for request 3
    expired, at = d.expire(6.5, pending)
    assert expired == [3, 4] and at == 7.0
    for k in expired:
        del pending[k]
    # An earlier deadline than the armed one needs a timer of its own.
    pending[99] = None
    assert d.add(6.8, 99, pending) == 6.8
    assert d.add(7.5, 100, pending) is None


def test_answered_entries_do_not_pile_up():
    d = Deadlines()
    pending = {}
    for k in range(100_000):
        pending[k] = None
        d.add(10.0 + k * 1e-4, k, pending)
        del pending[k]  # answered at once, long before its deadline
    assert len(d) <= 1025
