"""Admission under a service's limits (iris.core.limits.Gate): hand over, queue, turn away."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris.core.limits import ENTRY_COST, Gate, ServiceLimits, TopicLimits

HANDED, QUEUED, TURNED_AWAY = True, False, None


def test_messages_are_handed_over_up_to_the_concurrency_then_queued_then_turned_away():
    gate = Gate(concurrency=2, max_queued_bytes=2 * (10 + ENTRY_COST))
    assert [gate.offer(k, 10) for k in "ab"] == [HANDED, HANDED]
    assert gate.in_flight == 2 and gate.queued_bytes == 0
    assert [gate.offer(k, 10) for k in "cd"] == [QUEUED, QUEUED]
    assert gate.queued_bytes == 2 * (10 + ENTRY_COST)
    assert gate.offer("e", 10) is TURNED_AWAY
    assert gate.in_flight == 2 and gate.queued_bytes == 2 * (10 + ENTRY_COST)  # unchanged


def test_a_message_that_fits_exactly_is_queued_and_one_byte_more_is_not():
    room = 100 + ENTRY_COST
    gate = Gate(concurrency=1, max_queued_bytes=room)
    assert gate.offer("busy", 0) is HANDED
    assert gate.offer("big", 101) is TURNED_AWAY
    assert gate.offer("fits", 100) is QUEUED
    assert gate.queued_bytes == room


def test_empty_messages_are_bounded_too():
    """Each queued message costs ENTRY_COST on top of its payload, so a flood of empty
    messages cannot queue without limit."""
    gate = Gate(concurrency=1, max_queued_bytes=3 * ENTRY_COST)
    assert gate.offer("busy", 0) is HANDED
    assert [gate.offer(k, 0) for k in range(4)] == [QUEUED, QUEUED, QUEUED, TURNED_AWAY]
    assert gate.queued_bytes == 3 * ENTRY_COST
    nothing = Gate(concurrency=1, max_queued_bytes=0)
    assert nothing.offer("busy", 0) is HANDED
    assert nothing.offer("empty", 0) is TURNED_AWAY  # no queue at all: busy means refused


def test_a_turned_away_message_does_not_block_a_smaller_one_behind_it():
    gate = Gate(concurrency=1, max_queued_bytes=50 + ENTRY_COST)
    gate.offer("busy", 0)
    assert gate.offer("large", 51) is TURNED_AWAY
    assert gate.offer("small", 50) is QUEUED


def test_done_hands_over_the_queued_messages_in_order_as_slots_free():
    gate = Gate(concurrency=2, max_queued_bytes=1000)
    for k in "abcde":
        gate.offer(k, 1)  # a, b handed; c, d, e queued
    assert gate.done() == ["c"]
    assert gate.in_flight == 2 and gate.queued_bytes == 2 * (1 + ENTRY_COST)
    assert gate.done() == ["d"]
    assert gate.done() == ["e"]
    assert gate.queued_bytes == 0 and gate.in_flight == 2
    assert gate.done() == [] and gate.done() == []
    assert gate.in_flight == 0
    assert gate.offer("f", 1) is HANDED  # free slots again: straight through


@settings(max_examples=300, deadline=None)
@given(concurrency=st.integers(1, 4), room=st.integers(0, 400),
       steps=st.lists(st.one_of(st.integers(0, 100), st.none()), max_size=60))
def test_any_sequence_keeps_the_limits_and_the_order(concurrency, room, steps):
    """Offers (a payload size) and completions (None) in any order: never more than
    `concurrency` in flight, never more than the room queued, queued messages handed over
    in the order they came, and each accepted message handed over exactly once."""
    gate = Gate(concurrency, room)
    handed, queued, costs, accepted = [], [], {}, []

    def finish_one():
        out = gate.done()
        assert out == queued[:len(out)]
        del queued[:len(out)]
        handed.extend(out)

    for n, step in enumerate(steps):
        if step is None:
            if gate.in_flight:
                finish_one()
        else:
            outcome = gate.offer(n, step)
            if outcome is not TURNED_AWAY:
                accepted.append(n)
            if outcome is HANDED:
                assert not queued  # nothing jumps the queue
                handed.append(n)
            elif outcome is QUEUED:
                queued.append(n)
                costs[n] = step + ENTRY_COST
            else:
                assert gate.queued_bytes + step + ENTRY_COST > room
        assert gate.in_flight <= concurrency
        assert gate.queued_bytes == sum(costs[k] for k in queued) <= room
    while gate.in_flight:
        finish_one()
    assert not queued and gate.queued_bytes == 0
    assert sorted(handed) == accepted  # every accepted one once, none turned away


def test_limits_reject_values_that_would_block_everything_or_make_no_sense():
    with pytest.raises(ValueError):
        ServiceLimits(max_concurrency=0)
    with pytest.raises(ValueError):
        ServiceLimits(max_broadcast_concurrency=0)
    with pytest.raises(ValueError):
        ServiceLimits(max_queued_bytes=-1)
    with pytest.raises(ValueError):
        TopicLimits(max_queued_bytes=-1)
    assert ServiceLimits(max_queued_bytes=0).max_queued_bytes == 0  # no queue is allowed
