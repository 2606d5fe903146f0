"""One timer for many pending requests (iris.core.deadlines.Deadlines).

The owner sets a timer whenever `add` or `expire` returns a time; these tests play the owner.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_compaction_keeps_every_pending_entry():
    """Answered entries are dropped in bulk once they far outnumber the pending ones; the
    long-lived pending ones among them still come due, in order."""
    d = Deadlines()
    pending = {}
    for k in range(50):
        pending[k] = None
        d.add(100.0 + k, k, pending)
    for k in range(50, 100_050):
        pending[k] = None
        d.add(10.0, k, pending)
        del pending[k]  # answered at once
    assert len(d) <= 1025
    expired, at = d.expire(10.0, pending)
    assert expired == [] and at == 100.0
    expired, at = d.expire(200.0, pending)
    assert expired == list(range(50)) and at is None


def test_answered_entries_go_when_they_reach_the_head_whatever_their_deadline():
    d = Deadlines()
    pending = {1: None, 2: None}
    assert d.add(1.0, 1, pending) == 1.0
    assert d.add(50.0, 2, pending) is None
    pending.clear()  # both answered
    assert d.expire(1.0, pending) == ([], None)  # nothing to wait for: no timer
    assert len(d) == 0  # both forgotten, not only the one that was due


def test_an_earlier_timer_firing_leaves_the_later_one_in_charge():
    """Two timers are set (a later deadline first, then an earlier one). When the earlier
    fires, the owner is told the next time to wake; once that fires, nothing is left."""
    d = Deadlines()
    pending = {5: None, 3: None}
    assert d.add(5.0, 5, pending) == 5.0
    assert d.add(3.0, 3, pending) == 3.0
    expired, at = d.expire(3.0, pending)
    assert expired == [3] and at == 5.0
    del pending[3]
    expired, at = d.expire(5.0, pending)
    assert expired == [5] and at is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.sampled_from(["ask", "answer"]),
                          st.floats(0.1, 5.0)), max_size=80))
def test_every_pending_deadline_has_a_timer_at_or_before_it(steps):
    """An owner that sets every timer it is told to: at every moment some timer comes at or
    before the earliest pending deadline, and each pending entry expires once, when the
    first timer at or past its deadline fires; answered ones never expire."""
    d = Deadlines()
    pending: dict[int, float] = {}
    timers: list[float] = []
    expired: list[int] = []
    now, ident = 0.0, 0

    def run_until(t):
        while timers and min(timers) <= t:
            at = min(timers)
            timers.remove(at)
            due, next_at = d.expire(at, pending)
            for k in due:
                assert pending.pop(k) <= at
            expired.extend(due)
            assert all(deadline > at for deadline in pending.values())
            if next_at is not None:
                timers.append(next_at)

    for gap, action, timeout in steps:
        run_until(now + gap)
        now += gap
        if action == "ask":
            ident += 1
            pending[ident] = now + timeout
            at = d.add(now + timeout, ident, pending)
            if at is not None:
                timers.append(at)
        elif pending:
            del pending[min(pending)]  # the oldest request is answered
        if pending:
            assert timers and min(timers) <= min(pending.values())
    run_until(now + 10.0)
    assert not pending and len(expired) == len(set(expired))
