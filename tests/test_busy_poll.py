"""Busy polling after traffic (iris.runtime.busy_poll)."""

import pytest
import trio
import trio.testing

from iris.runtime.busy_poll import BusyPoll


async def test_busy_poll_spins_for_a_window_after_traffic_then_sleeps(nursery):
    off = BusyPoll(0.0)
    off.poke()
    await off.run()  # returns at once: nothing spins

    poll = BusyPoll(0.005)
    nursery.start_soon(poll.run)
    with trio.fail_after(5):  # no traffic, no polling: every task gets to wait
        await trio.testing.wait_all_tasks_blocked()
    assert not poll._spinning
    passes = 0
    poll.poke()
    with trio.fail_after(5):
        while not poll._spinning:
            await trio.sleep(0)
        while poll._spinning:  # the loop keeps passing (no sleep) until the window ends
            passes += 1
            await trio.sleep(0)
    assert passes > 10
    with pytest.raises(ValueError):
        BusyPoll(-1)
