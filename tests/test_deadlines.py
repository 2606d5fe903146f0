"""Many deadlines behind one timer (overlay.deadlines.Deadlines), in both of its uses.

The owner sets a timer whenever `add` or `expire` returns a time, and calls `expire` when one
fires; these tests play the owner. The overlay's use: every entry waits the same timeout, no
`pending` collection, `clear()` when everything is answered, `reset()` on leaving. The
requests' use: arbitrary deadlines, answered entries dropped lazily through `pending`.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.deadlines import Deadlines

# ---------------------------------------------------------------- one shared timeout (overlay)


def test_one_timer_for_many_entries_due_in_the_order_added():
    d = Deadlines()
    assert d.add(1.0, 1) == 1.0  # nothing armed: the owner sets a timer
    assert d.add(1.2, 2) is None and d.add(1.5, 3) is None  # one is set already
    assert d.expire(1.0) == ([1], 1.2)  # due, and the next timer: the next entry's deadline
    assert d.expire(1.6) == ([2, 3], None)  # empty: no timer
    assert d.add(6.0, 4) == 6.0  # and the next entry arms one again


def test_an_entry_is_not_due_before_its_deadline():
    d = Deadlines()
    d.add(10.6, 7)
    assert d.expire(10.5) == ([], None)  # early (a stray timer): the armed one still counts
    assert d.expire(10.6) == ([7], None)


def test_entries_added_while_handling_due_ones_do_not_delay_those_waiting():
    """The next timer is chosen before the owner handles what is due: a probe retried or a
    hop re-sent then (due a whole timeout later) needs no timer of its own, and the entries
    already waiting still come due at their own deadlines."""
    d = Deadlines()
    d.add(1.0, 1)
    d.add(1.25, 2)
    due, at = d.expire(1.0)
    assert due == [1] and at == 1.25
    assert d.add(2.0, 3) is None  # the owner re-sends what expired
    assert d.expire(1.25) == ([2], 2.0)
    assert d.expire(2.0) == ([3], None)


def test_a_heap_that_empties_and_fills_again_keeps_its_one_timer():
    """A caller waiting for each reply: add, answered (clear), add, ... The timer set for the
    first entry stays set; when it fires it finds nothing due, and asks only for the deadline
    of what was added since."""
    d = Deadlines()
    timers = [d.add(1.0, 0)]
    for k in range(1, 50):
        d.clear()  # everything answered
        timers.append(d.add(1.0 + k * 0.01, k))
    assert timers == [1.0] + [None] * 49
    assert d.expire(1.0) == ([], 1.49)  # entry 49 (added at 0.49) is not due yet
    d.clear()
    assert d.expire(1.49) == ([], None)


def test_reset_forgets_the_entries_and_the_timer():
    d = Deadlines()
    d.add(1.0, 1)
    stale = d.generation  # what the owner tagged its timer with
    d.reset()
    assert d.generation != stale  # the old timer, when it fires, is known to be stale
    assert len(d) == 0
    assert d.add(1.5, 2) == 1.5  # a new timer is needed: the old one no longer counts
    assert d.expire(1.5) == ([2], None)


def test_an_entry_due_earlier_than_the_armed_timer_gets_its_own():
    """The overlay's timeouts follow the acknowledgement delay: after they shrink, an entry
    added later is due earlier, and expires at its own deadline, not behind the older one."""
    d = Deadlines()
    assert d.add(2.0, 1) == 2.0  # a long timeout
    assert d.add(0.7, 2) == 0.7  # the timeout shrank: due before the armed timer
    # Only the earliest timer is tracked: the owner is asked again for one at 2.0 (a second
    # wake-up then finds nothing due).
    assert d.expire(0.7) == ([2], 2.0)
    assert d.expire(2.0) == ([1], None)
    assert d.expire(2.0) == ([], None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.7), st.sampled_from(["add", "clear", "resend"])),
                max_size=60))
def test_every_entry_comes_due_once_at_its_deadline_while_one_timer_is_set(steps):
    """An owner with one timeout: entries added at increasing times, cleared now and then,
    and the first entry of each expiry re-added when it is handled (a retried probe). Every
    entry not cleared comes out exactly once, never before its deadline and never after the
    first timer that fires at or past it; at most one timer is set at a time."""
    timeout = 1.0
    d = Deadlines()
    now, timer, key = 0.0, None, 0
    live = {}  # key -> deadline, for entries added since the last clear
    expired = []
    resend = False

    def fire_timers_until(t):
        nonlocal timer, key
        while timer is not None and timer <= t:
            at, timer = timer, None
            due, timer = d.expire(at)
            for k in due:
                assert live.pop(k) <= at
            expired.extend(due)
            assert all(deadline > at for deadline in live.values())  # nothing left overdue
            if resend and due:
                key += 1
                again = d.add(at + timeout, key)
                assert (again is not None) == (timer is None)
                timer = timer if again is None else again
                live[key] = at + timeout
            if live:
                assert timer is not None and timer <= min(live.values())

    for gap, action in steps:
        fire_timers_until(now + gap)
        now += gap
        if action == "clear":
            d.clear()
            live.clear()
            continue
        resend = resend or action == "resend"
        key += 1
        at = d.add(now + timeout, key)
        assert (at is not None) == (timer is None)  # a timer only when none is set
        if at is not None:
            timer = at
        live[key] = now + timeout
    resend = False
    fire_timers_until(now + 10 * timeout)
    assert not live and len(expired) == len(set(expired))


# ------------------------------------------------------- arbitrary deadlines, pending (requests)


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


def test_without_pending_nothing_is_dropped_before_its_deadline():
    """The overlay passes no `pending`: every entry stays until it comes due (the owner
    ignores the answered ones then), however many there are."""
    d = Deadlines()
    for k in range(2000):
        d.add(10.0, k)
    assert len(d) == 2000
    assert d.expire(10.0) == (list(range(2000)), None)


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
