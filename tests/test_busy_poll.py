"""Busy polling after traffic (iris.runtime.busy_poll).

The clock is trio's MockClock, which moves only when the test jumps it: "within the window"
and "after the window" are then exact, whatever the machine's load. Waits are counted in
scheduler passes (checkpoints), never in time.
"""

import pytest
import trio
import trio.testing

from iris.runtime import busy_poll
from iris.runtime.busy_poll import BusyPoll

PASSES = 200  # scheduler passes: far more than any hand-over below needs


class ThreadClocks:
    """A wall clock and a CPU clock for the poller, both trio's (mock) clock: as they are, the
    thread never waits for its CPU; `wait_for_cpu` moves the wall clock alone, so the next
    pass is one that did."""

    def __init__(self) -> None:
        self.waited = 0.0

    def clocks(self):
        return (lambda: trio.current_time() + self.waited, trio.current_time)

    def wait_for_cpu(self, seconds: float) -> None:
        self.waited += seconds


async def passes_until(predicate) -> int:
    """Yield to the scheduler until `predicate()` holds; the passes it took."""
    for passes in range(PASSES):
        if predicate():
            return passes
        await trio.lowlevel.checkpoint()
    raise AssertionError(f"not true after {PASSES} scheduler passes")


async def test_a_window_of_zero_never_polls():
    off = BusyPoll(0.0)
    off.poke()
    with trio.fail_after(5):
        await off.run()  # returns at once: nothing spins
    with pytest.raises(ValueError):
        BusyPoll(-1)


async def test_polling_lasts_one_window_after_the_last_traffic(nursery, mock_clock):
    poll = BusyPoll(0.005, clocks=ThreadClocks().clocks())
    nursery.start_soon(poll.run)
    await trio.testing.wait_all_tasks_blocked()  # no traffic, no polling: every task waits
    assert not poll._spinning
    poll.poke()
    await passes_until(lambda: poll._spinning)
    # The clock stands still: within the window the poller keeps passing, never sleeping.
    for _ in range(50):
        await trio.lowlevel.checkpoint()
        assert poll._spinning
    mock_clock.jump(0.004)
    poll.poke()  # more traffic: a new window from now
    await passes_until(lambda: not poll._poked)  # the poller has seen it
    mock_clock.jump(0.004)  # 8 ms after the first poke (its window is over), 4 ms after this one
    for _ in range(50):
        await trio.lowlevel.checkpoint()
        assert poll._spinning
    mock_clock.jump(0.002)  # the second window ends
    await passes_until(lambda: not poll._spinning)
    await trio.testing.wait_all_tasks_blocked()  # asleep again until the next traffic
    poll.poke()
    await passes_until(lambda: poll._spinning)


async def test_a_thread_that_waited_for_its_cpu_stops_polling_for_a_while(nursery, mock_clock):
    threads = ThreadClocks()
    poll = BusyPoll(0.005, clocks=threads.clocks())
    nursery.start_soon(poll.run)
    poll.poke()
    await passes_until(lambda: poll._spinning)
    for _ in range(50):  # passes that took no longer than their CPU time: polling goes on
        await trio.lowlevel.checkpoint()
        assert poll._spinning
    threads.wait_for_cpu(busy_poll.DESCHEDULED_S * 2)  # another thread had the CPU meanwhile
    await passes_until(lambda: not poll._spinning)
    assert poll.contended == 1
    # Traffic within CALM_S finds the thread sleeping in epoll, as with no polling at all...
    poll.poke()
    await trio.testing.wait_all_tasks_blocked()
    assert not poll._spinning
    # ... and after it, the window is polled again.
    mock_clock.jump(busy_poll.CALM_S)
    poll.poke()
    await passes_until(lambda: poll._spinning)


async def test_only_a_pass_in_which_the_node_did_nothing_gives_the_cpu_away(
        nursery, mock_clock, monkeypatch):
    yields = []
    monkeypatch.setattr(busy_poll.os, "sched_yield", lambda: yields.append(1))
    clocks = ThreadClocks()
    wall, cpu = clocks.clocks()
    busy = True

    def working_wall():  # read once a pass: the node handles an input in every pass
        poll.worked = busy
        return wall()

    poll = BusyPoll(0.005, clocks=(working_wall, cpu))
    nursery.start_soon(poll.run)
    poll.poke()
    await passes_until(lambda: poll._spinning)
    for _ in range(20):
        await trio.lowlevel.checkpoint()
    assert poll._spinning and not yields
    busy = False  # idle passes: each gives way to other threads first
    for _ in range(20):
        await trio.lowlevel.checkpoint()
    assert poll._spinning and len(yields) >= 18
