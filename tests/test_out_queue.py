"""The outgoing queue of one connection (iris.runtime.out_queue.OutQueue): its order, its two
bounds and what is refused at them, bytes counted until written, and how it closes.

These tests play the writer: `take` or `take_all`, then `written` once the bytes are with the
kernel (with what a short write left over, if any).
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris.runtime.backpressure import Backpressure
from iris.runtime.out_queue import OutQueue


def test_frames_go_in_order_with_the_priority_lane_first():
    q = OutQueue(1000, max_priority_frames=10)
    for frame, urgent in ((b"d1", False), (b"c1", True), (b"d2", False), (b"c2", True)):
        assert q.push(frame, priority=urgent)
    assert q.take(1000) == [b"c1", b"c2", b"d1", b"d2"]
    q.written()
    assert not q
    q.push(b"d3")
    q.push(b"c3", priority=True)
    assert q.take_all() == b"c3d3"


def test_take_stops_at_its_size_but_always_gives_one_frame():
    q = OutQueue(1000, max_priority_frames=10)
    q.push(b"c" * 4, priority=True)
    for k in range(5):
        q.push(b"%d" % k * 10)
    assert q.take(15) == [b"c" * 4, b"0" * 10, b"1" * 10]  # stops once 15 bytes are reached
    assert q.take(1) == [b"2" * 10]  # one frame, though larger than asked
    assert q.take(100) == [b"3" * 10, b"4" * 10]
    assert q.take(100) == []


def test_the_main_lane_is_bounded_in_bytes_and_refuses_what_does_not_fit():
    q = OutQueue(10)
    assert q.push(b"a" * 6)
    assert not q.push(b"b" * 5)  # 11 > 10: refused, nothing queued
    assert q.queued_bytes == 6
    assert q.push(b"c" * 4)  # exactly the bound fits
    assert not q.push(b"d")
    assert q.push(b"")  # an empty frame takes no room
    assert q.take_all() == b"a" * 6 + b"c" * 4


def test_a_frame_larger_than_the_bound_is_never_queued():
    q = OutQueue(10)
    assert not q.push(b"x" * 11)
    assert not q and q.queued_bytes == 0


def test_the_priority_lane_is_bounded_in_frames_and_takes_no_room_from_data():
    q = OutQueue(10, max_priority_frames=2)
    assert q.push(b"d" * 10)  # the main lane is full
    assert q.push(b"c" * 100, priority=True)  # control still goes: its bytes are not counted
    assert q.push(b"c", priority=True)
    assert not q.push(b"c", priority=True)  # the third frame is refused
    assert q.queued_bytes == 10
    assert q.take(1000) == [b"c" * 100, b"c", b"d" * 10]
    q.written()
    assert q.push(b"c", priority=True)  # taken frames leave the lane at once


def test_a_queue_without_a_priority_lane_refuses_priority_frames():
    q = OutQueue(100)
    assert not q.push(b"c", priority=True)
    assert not q


def test_bytes_count_until_written_so_a_write_in_progress_stays_inside_the_bound():
    pressure = Backpressure()
    q = OutQueue(10, pressure=pressure)
    q.push(b"a" * 8)
    assert q.take(100) == [b"a" * 8]
    assert not q  # nothing waits to be taken ...
    assert q.queued_bytes == 8 and pressure.queued == 8  # ... but the write is in progress
    assert not q.push(b"b" * 3)  # 8 + 3 > 10
    q.written()
    assert q.queued_bytes == 0 and pressure.queued == 0
    assert q.push(b"b" * 3)


def test_a_short_write_puts_the_rest_first_and_counts_only_what_went():
    pressure = Backpressure()
    q = OutQueue(100, pressure=pressure)
    q.push(b"abc")
    q.push(b"def")
    data = q.take_all()
    assert data == b"abcdef"
    q.push(b"ghi")  # arrives during the write
    q.written(data[4:])  # the kernel took "abcd"
    assert q.queued_bytes == pressure.queued == 5
    assert q.take_all() == b"efghi"
    q.written()
    assert q.queued_bytes == pressure.queued == 0
    assert q.take_all() == b""


def test_finish_queues_the_last_word_beyond_the_bound_and_closes():
    pressure = Backpressure()
    q = OutQueue(4, max_priority_frames=4, pressure=pressure)
    q.push(b"abcd")
    q.finish(b"bye!")  # beyond the bound: the last word always goes
    assert q.closed and q.queued_bytes == pressure.queued == 8
    assert not q.push(b"x") and not q.push(b"x", priority=True)
    q.finish(b"again")  # closed already: nothing more
    assert q.take_all() == b"abcdbye!"  # what was queued is still written
    q.written()
    assert q.queued_bytes == pressure.queued == 0


def test_finish_without_a_last_word_only_closes():
    q = OutQueue(4)
    q.push(b"ab")
    q.finish()
    assert q.closed and q.take_all() == b"ab"


def test_discard_drops_everything_even_the_write_in_progress():
    pressure = Backpressure()
    q = OutQueue(100, max_priority_frames=4, pressure=pressure)
    q.push(b"one")
    q.take(100)  # being written
    q.push(b"two")
    q.push(b"c", priority=True)
    q.discard()
    assert q.closed and not q
    assert q.queued_bytes == 0 and pressure.queued == 0
    q.written()  # the writer reports the write it had under way: nothing goes negative
    assert q.queued_bytes == 0 and pressure.queued == 0
    assert q.take(100) == [] and q.take_all() == b""
    assert not q.push(b"three")


def test_queues_report_to_one_backpressure_together():
    pressure = Backpressure(high_water=10, low_water=4)
    a = OutQueue(100, pressure=pressure)
    b = OutQueue(100, pressure=pressure)
    a.push(b"x" * 6)
    b.push(b"y" * 6)
    assert pressure.queued == 12 and pressure.congested
    a.take_all()
    a.written()
    assert pressure.queued == 6 and not pressure.congested


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, 12), st.booleans()),
    st.tuples(st.just("take"), st.integers(1, 30)),
    st.just(("write",)),
), max_size=60))
def test_two_lanes_keep_their_order_and_count_what_is_unwritten(steps):
    """As a link uses it: any mix of pushes to both lanes, batches taken and written whole.
    Each lane's frames come out in the order pushed, every batch has its control frames
    ahead of its data, the main lane never holds more than its bound, and `queued_bytes`
    (and the backpressure) is exactly the main-lane bytes pushed and not yet written."""
    limit = 40
    pressure = Backpressure()
    q = OutQueue(limit, max_priority_frames=3, pressure=pressure)
    pushed = {True: [], False: []}  # by lane: the frames accepted, in order
    out = {True: [], False: []}
    batch = None  # the write in progress
    for step in steps:
        if step[0] == "push":
            _, padding, urgent = step
            tag = b"C" if urgent else b"D"
            frame = tag + b"%03d" % len(pushed[urgent]) + b"." * padding
            if q.push(frame, priority=urgent):
                pushed[urgent].append(frame)
        elif step[0] == "take" and batch is None:
            batch = q.take(step[1])
            lanes = [frame.startswith(b"C") for frame in batch]
            assert lanes == sorted(lanes, reverse=True)  # control first
        elif step[0] == "write" and batch is not None:
            for frame in batch:
                out[frame.startswith(b"C")].append(frame)
            q.written()
            batch = None
        unwritten = sum(map(len, pushed[False])) - sum(map(len, out[False]))
        assert q.queued_bytes == pressure.queued == unwritten <= limit
    for lane in (True, False):
        assert out[lane] == pushed[lane][:len(out[lane])]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("push"), st.binary(max_size=12)),
    st.tuples(st.just("write"), st.integers(0, 40)),
), max_size=60))
def test_one_lane_with_short_writes_loses_and_repeats_nothing(steps):
    """As a relay connection uses it: everything queued is taken at once and written as far
    as the kernel takes it. The bytes written are exactly the bytes pushed, in order, and
    the count is exactly what is not written yet."""
    limit = 32
    q = OutQueue(limit)
    pushed, written = bytearray(), bytearray()
    for step in steps:
        if step[0] == "push":
            if q.push(step[1]):
                pushed.extend(step[1])
        else:
            data = q.take_all()
            went = min(step[1], len(data))
            written.extend(data[:went])
            q.written(data[went:])
        assert q.queued_bytes == len(pushed) - len(written) <= limit
    written.extend(q.take_all())
    assert written == pushed


@pytest.mark.parametrize("asks", ["room", "free first"])
async def test_a_producer_that_always_finds_room_still_gives_other_tasks_a_turn(asks):
    """Links write eagerly, so a fast producer may never be congested: `room()` yields once
    every TURN_EVERY calls, and the node's readers and timers are not held up by a burst.
    `free()` (which `Node.request` asks first, sparing itself the coroutine) keeps the count."""
    import trio

    from iris.runtime.backpressure import TURN_EVERY

    pressure = Backpressure()
    turns = []

    async def other():
        while True:
            turns.append(calls)
            await trio.lowlevel.checkpoint()

    calls = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        for _ in range(3 * TURN_EVERY):
            if asks == "room" or not pressure.free():
                await pressure.room()
            calls += 1
        nursery.cancel_scope.cancel()
    # `other` ran only when the producer had made a multiple of TURN_EVERY calls, and it did
    # (trio runs ready tasks in either order, so how many times at each turn varies)
    boundaries = {k * TURN_EVERY - 1 for k in range(1, 4)}
    assert turns and set(turns) <= boundaries
