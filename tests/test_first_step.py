"""`on_first_wait`: a coroutine stepped by hand runs as if awaited (values, errors and
cancellation pass through), and the callback comes exactly when it first waits; the runtime
uses it to hold a request's hop acknowledgements until its handler replies or waits."""

import pytest
import trio
from conftest import wait_until

import iris.testing
from iris.runtime.first_step import on_first_wait


async def test_a_coroutine_that_never_waits_runs_without_the_callback():
    calls = []

    async def quick(x):
        return x * 2

    assert await on_first_wait(quick(21), lambda: calls.append("waited")) == 42
    assert calls == []


async def test_a_coroutine_that_waits_gets_the_callback_first_and_its_values_back():
    calls = []
    send, receive = trio.open_memory_channel(1)

    async def slow():
        calls.append("started")
        value = await receive.receive()  # a wait: trio sends the value back in
        await trio.lowlevel.checkpoint()
        return value + 1

    async with trio.open_nursery() as nursery:
        async def run():
            calls.append(await on_first_wait(slow(), lambda: calls.append("waited")))
        nursery.start_soon(run)
        await wait_until(lambda: "waited" in calls)
        await send.send(41)
    assert calls == ["started", "waited", 42]


async def test_errors_and_cancellation_pass_through():
    async def fails():
        await trio.lowlevel.checkpoint()
        raise ValueError("from the handler")

    with pytest.raises(ValueError, match="from the handler"):
        await on_first_wait(fails(), lambda: None)
    async def forever():
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        await on_first_wait(forever(), lambda: None)
    assert scope.cancelled_caught


async def test_acknowledgements_held_for_a_handler_go_once_it_waits_or_replies():
    release = trio.Event()

    class Member:
        def __init__(self):
            self.entered = 0

        async def handle_request(self, data):
            self.entered += 1
            if data == b"slow":
                await release.wait()
            return data

    async with iris.testing.local_nodes(2) as nodes:
        member = Member()
        await nodes[0].register("svc", member)
        server = nodes[0]._runtime
        assert await nodes[1].request("svc", b"fast", timeout=10) == b"fast"
        assert server._held == []  # released with the reply
        async with trio.open_nursery() as nursery:
            async def slow():
                assert await nodes[1].request("svc", b"slow", timeout=10) == b"slow"
            nursery.start_soon(slow)
            await wait_until(lambda: member.entered == 2)
            assert server._held == []  # released as the handler started waiting
            release.set()
