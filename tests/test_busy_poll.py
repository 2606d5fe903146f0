"""Busy polling after traffic (iris.runtime.busy_poll).

The clock is trio's MockClock, which moves only when the test jumps it: "within the window"
and "after the window" are then exact, whatever the machine's load. Waits are counted in
scheduler passes (checkpoints), never in time.
"""

import pytest
import trio
import trio.testing

from iris.runtime.busy_poll import BusyPoll

PASSES = 200  # scheduler passes: far more than any hand-over below needs


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
    poll = BusyPoll(0.005)
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
