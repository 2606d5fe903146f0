"""Deadlines that share one timeout behind one timer (overlay.timeouts.TimeoutQueue).

The owner sets a timer when `push` or `rearm` returns a time, and calls `expire` then `rearm`
when it fires; these tests play the owner.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.timeouts import TimeoutQueue


def test_one_timer_for_many_entries_due_in_the_order_pushed():
    q = TimeoutQueue(1.0)
    assert q.push(0.0, 1) == 1.0  # nothing armed: the owner sets a timer
    assert q.push(0.2, 2) is None and q.push(0.5, 3) is None  # one is set already
    assert q.expire(1.0) == [1]
    assert q.rearm() == 1.2  # the next head's deadline
    assert q.expire(1.6) == [2, 3]
    assert q.rearm() is None  # empty: no timer
    assert q.push(5.0, 4) == 6.0  # and the next entry arms one again


def test_an_entry_is_not_due_before_its_deadline():
    q = TimeoutQueue(0.6)
    q.push(10.0, 7)
    assert q.expire(10.5) == []  # early (a timer set for an entry since cleared)
    assert q.rearm() == 10.6
    assert q.expire(10.6) == [7]


def test_a_queue_that_empties_and_fills_again_keeps_its_one_timer():
    """A caller waiting for each reply: push, answered (clear), push, ... The timer set for
    the first entry stays set; when it fires it finds nothing due, and asks only for the
    deadline of what is pending then."""
    q = TimeoutQueue(1.0)
    timers = [q.push(0.0, 0)]
    for k in range(1, 50):
        q.clear()  # everything answered
        timers.append(q.push(k * 0.01, k))
    assert timers == [1.0] + [None] * 49
    assert q.expire(1.0) == []  # entry 49 (pushed at 0.49) is not due yet
    assert q.rearm() == 1.49
    q.clear()
    assert q.expire(1.49) == [] and q.rearm() is None


def test_reset_forgets_the_entries_and_the_timer():
    q = TimeoutQueue(1.0)
    q.push(0.0, 1)
    stale = q.generation  # what the owner tagged its timer with
    q.reset()
    assert q.generation != stale  # the old timer, when it fires, is known to be stale
    assert q.push(0.5, 2) == 1.5  # a new timer is needed: the old one no longer counts
    assert q.expire(1.5) == [2]


def test_a_longer_timeout_applies_to_entries_pushed_afterwards():
    q = TimeoutQueue(0.6)
    assert q.push(0.0, 1) == 0.6
    q.timeout = 2.0  # the owner adapts it to slower acknowledgements
    q.push(0.1, 2)
    assert q.expire(0.6) == [1]
    assert q.rearm() == 2.1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.7), st.sampled_from(["push", "clear"])),
                max_size=60))
def test_every_entry_comes_due_once_at_its_deadline_or_after_while_one_timer_is_set(steps):
    """An owner with one timer: entries pushed at increasing times, cleared now and then.
    Every entry not cleared comes out exactly once, never before its deadline and never
    after the first timer that fires at or past it."""
    timeout = 1.0
    q = TimeoutQueue(timeout)
    now, timer, key = 0.0, None, 0
    live = {}  # key -> deadline, for entries pushed since the last clear
    expired = []

    def fire_timers_until(t):
        nonlocal timer
        while timer is not None and timer <= t:
            at, timer = timer, None
            due = q.expire(at)
            for k in due:
                assert live.pop(k) <= at
            expired.extend(due)
            assert all(deadline > at for deadline in live.values())  # nothing left overdue
            timer = q.rearm()

    for gap, action in steps:
        fire_timers_until(now + gap)
        now += gap
        if action == "push":
            key += 1
            at = q.push(now, key)
            assert (at is not None) == (timer is None)  # a timer only when none is set
            if at is not None:
                timer = at
            live[key] = now + timeout
        else:
            q.clear()
            live.clear()
    fire_timers_until(now + 10 * timeout)
    assert not live and len(expired) == len(set(expired))
