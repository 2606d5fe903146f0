"""`iris.aio`: the node and the relay client from asyncio programs with no trio code in them.

Each test is a plain asyncio program (`asyncio.run`) embedding nodes on loopback TCP; waits
are for conditions, with deadlines (`asyncio.timeout`)."""

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest

import iris
import iris.aio
from iris.core.messages import MAX_PAYLOAD


def run(main: Callable, *args, deadline: float = 60.0):
    async def bounded():
        async with asyncio.timeout(deadline):
            return await main(*args)
    return asyncio.run(bounded())


async def until(predicate: Callable[[], bool], deadline: float = 20.0) -> None:
    async with asyncio.timeout(deadline):
        while not predicate():  # noqa: ASYNC110 - no event signals the states polled here
            await asyncio.sleep(0.01)


class Upper:
    """An asyncio member: requests upper-cased, broadcasts recorded, tunnels echoed reversed."""

    def __init__(self) -> None:
        self.broadcasts: list[bytes] = []
        self.loop_seen: set[asyncio.AbstractEventLoop] = set()

    async def handle_request(self, data: bytes) -> bytes:
        self.loop_seen.add(asyncio.get_running_loop())
        await asyncio.sleep(0)
        if data == b"raise":
            raise ValueError("asked to raise")
        return data.upper()

    async def handle_broadcast(self, data: bytes) -> None:
        self.broadcasts.append(data)

    async def handle_tunnel(self, tunnel: iris.aio.Tunnel) -> None:
        while True:
            try:
                message = await tunnel.receive()
            except iris.ClosedError:
                return
            await tunnel.send(message[::-1])


def two_nodes(body: Callable):
    """Run `body(a, b, key)` with node b joined through node a."""
    async def main():
        key = iris.generate_network_key()
        async with iris.aio.open_node(network_key=key) as a, \
                iris.aio.open_node(network_key=key, seeds=[a.address]) as b:
            return await body(a, b, key)
    return main


def test_every_pattern_from_asyncio():
    """The acceptance run: an asyncio handler serves 1,000 concurrent requests, a broadcast,
    a publish reaching 3 subscribers and a 1 MiB tunnel message, all delivered."""
    async def body(a, b, key):
        member = Upper()
        await a.register("upper", member)
        replies = await asyncio.gather(*(b.request("upper", b"m%d" % i, timeout=20)
                                         for i in range(1000)))
        assert replies == [b"M%d" % i for i in range(1000)]
        assert member.loop_seen == {asyncio.get_running_loop()}  # the application's loop

        await b.broadcast("upper", b"to all")
        events: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}
        async with iris.aio.open_node(network_key=key, seeds=[a.address]) as c:
            for name, node in (("a", a), ("b", b), ("c", c)):
                async def on_event(event, name=name):
                    events[name].append(event)
                await node.subscribe("news", on_event)
            for i in range(10):
                await b.publish("news", b"e%d" % i)
            await until(lambda: all(len(got) == 10 for got in events.values()))
        assert all(got == [b"e%d" % i for i in range(10)] for got in events.values())
        await until(lambda: member.broadcasts == [b"to all"])

        tunnel = await b.tunnel("upper", timeout=10)
        big = bytes(range(256)) * 4096  # 1 MiB
        await tunnel.send(big)
        assert await tunnel.receive() == big[::-1]
        await tunnel.close()
    run(two_nodes(body))


def test_errors_are_the_trio_apis():
    async def body(a, b, key):
        await a.register("upper", Upper())
        with pytest.raises(iris.RemoteError, match="asked to raise"):
            await b.request("upper", b"raise", timeout=10)
        with pytest.raises(iris.LimitExceededError):
            await b.request("upper", b"x" * (MAX_PAYLOAD + 1), timeout=10)
        with pytest.raises(iris.LimitExceededError):
            await b.publish("news", b"x" * (MAX_PAYLOAD + 1))
        with pytest.raises(ValueError, match="timeout"):
            await b.request("upper", b"x", timeout=0)
        with pytest.raises(TypeError):
            await b.register("nothing", object())
        assert await b.request("upper", b"still fine", timeout=10) == b"STILL FINE"
    run(two_nodes(body))


def test_cancelled_requests_leave_nothing_behind():
    """1,000 times: a task waiting in `request` is cancelled (as `asyncio.timeout` does);
    the node's count of waiting requests returns to 0, and the node serves on."""
    release = asyncio.Event

    class Slow:
        def __init__(self) -> None:
            self.release = release()

        async def handle_request(self, data: bytes) -> bytes:
            await self.release.wait()
            return data

    async def body(a, b, key):
        slow = Slow()
        await a.register("slow", slow)
        for i in range(1000):
            task = asyncio.create_task(b.request("slow", b"%d" % i, timeout=1.0))
            for _ in range(i % 3):  # cancelled before, while and after it is sent
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(TimeoutError):  # asyncio's own, from asyncio.timeout
            async with asyncio.timeout(0.05):
                await b.request("slow", b"waited", timeout=5)
        slow.release.set()
        await until(lambda: b.status()["requests_waiting"] == 0, deadline=30)
        assert await b.request("slow", b"after", timeout=10) == b"after"
    run(two_nodes(body))


def test_closing_a_node_ends_its_waiting_requests_with_closed_error():
    async def main():
        key = iris.generate_network_key()
        never = asyncio.Event()

        class Never:
            async def handle_request(self, data: bytes) -> bytes:
                await never.wait()
                return data

        async with iris.aio.open_node(network_key=key) as a:
            await a.register("never", Never())
            async with iris.aio.open_node(network_key=key, seeds=[a.address]) as b:
                waiting = [asyncio.create_task(b.request("never", b"x", timeout=30))
                           for _ in range(20)]
                await until(lambda: b.status()["requests_waiting"] == 20)
            results = await asyncio.gather(*waiting, return_exceptions=True)
            assert all(isinstance(r, iris.ClosedError) for r in results)
            with pytest.raises(iris.ClosedError):
                await b.request("never", b"x", timeout=1)
    run(main)


def test_a_failed_join_raises_join_error():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]

    async def main():
        with pytest.raises(iris.JoinError):
            async with iris.aio.open_node(network_key=iris.generate_network_key(),
                                          seeds=[f"127.0.0.1:{port}"], join_timeout=1):
                pass
    run(main)


def test_relay_client_from_asyncio():
    """`iris.aio.RelayClient` against the relay of an `iris.aio` node: a member served by an
    asyncio handler, a request, an event, a status; and a request and an event from the
    node's own asyncio code to those clients (handed over from asyncio's side of the node,
    outside trio's tasks)."""
    from iris.relay.server import RelayServer

    async def main():
        async with iris.aio.open_node(network_key=iris.generate_network_key()) as node:
            port = await _serve_relay(node, RelayServer)
            member = Upper()
            async with iris.aio.RelayClient.open(port, cluster="upper", handler=member), \
                    iris.aio.RelayClient.open(port) as caller:
                assert await caller.request("upper", b"via relay", timeout=10) == b"VIA RELAY"
                events: list[bytes] = []

                async def on_event(event):
                    events.append(event)
                await caller.subscribe("news", on_event)
                await until(lambda: "news" in node.status()["topics"])
                await caller.publish("news", b"hello")
                await until(lambda: events == [b"hello"])
                assert (await caller.status())["relay"]["clients"] == 2
                assert await node.request("upper", b"from the node", timeout=10) \
                    == b"FROM THE NODE"
                await node.publish("news", b"from the node")
                await until(lambda: events == [b"hello", b"from the node"])
    run(main)


async def _serve_relay(node, relay_server_class) -> int:
    """A relay for `node` in its trio run (the test's one reach behind the asyncio face)."""
    server = relay_server_class(node._node)
    guest = node._guest
    port_future = guest.loop.create_future()

    async def serve():
        import trio

        async with trio.open_nursery() as nursery:
            port_future.set_result(await nursery.start(server.serve, 0, ("127.0.0.1",)))
    guest.call(serve)
    return await port_future


def test_two_programs_in_two_threads_each_with_its_own_loop():
    """Each asyncio loop hosts its own trio run: two threads, two loops, one network."""
    key = iris.generate_network_key()
    address: list = []
    ready, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def first():
        async with iris.aio.open_node(network_key=key) as a:
            await a.register("upper", Upper())
            address.append(a.address)
            ready.set()
            await asyncio.to_thread(done.wait, 60)

    def thread():
        try:
            run(first)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            ready.set()

    worker = threading.Thread(target=thread)
    worker.start()
    try:
        assert ready.wait(30) and not errors

        async def second():
            async with iris.aio.open_node(network_key=key, seeds=[address[0]]) as b:
                return await b.request("upper", b"across", timeout=10)
        assert run(second) == b"ACROSS"
    finally:
        done.set()
        worker.join(30)
    assert not errors


def test_a_burst_of_publishes_reaches_a_slow_subscriber_whole_and_in_order():
    """5,000 events published without a pause (the publisher's loop never waits on its
    own) reach a subscriber whose handler yields on every event: all of them, in order,
    one at a time; a handler that raises on one event does not end the subscription."""
    async def body(a, b, key):
        got: list[bytes] = []
        running = [0]

        async def on_event(event):
            running[0] += 1
            assert running[0] == 1, "two events handled at once"
            await asyncio.sleep(0)
            running[0] -= 1
            if event == b"bad":
                raise ValueError("a bad event")
            got.append(event)

        await a.subscribe("burst", on_event)
        await b.publish("burst", b"bad")
        for i in range(5000):
            await b.publish("burst", b"%d" % i)
        await until(lambda: len(got) == 5000, deadline=60)
        assert got == [b"%d" % i for i in range(5000)]
    run(two_nodes(body))


def test_a_handler_returning_no_bytes_is_the_callers_remote_error():
    class Wrong:
        async def handle_request(self, data: bytes):
            return "text"

    async def body(a, b, key):
        await a.register("wrong", Wrong())
        with pytest.raises(iris.RemoteError, match="returned str, not bytes"):
            await b.request("wrong", b"x", timeout=10)
    run(two_nodes(body))


def test_a_handler_knows_how_long_its_caller_waits():
    """`iris.aio.time_left()` in `handle_request`: what the caller's timeout leaves (less the
    trip), and infinity outside a handler."""
    class Patience:
        async def handle_request(self, data: bytes) -> bytes:
            return b"%f" % iris.aio.time_left()

    async def body(a, b, key):
        await a.register("patience", Patience())
        left = float(await b.request("patience", b"", timeout=7.0))
        assert 5.0 < left <= 7.0
        assert iris.aio.time_left() == float("inf")
    run(two_nodes(body))


def test_a_survey_from_asyncio_gathers_every_members_answer():
    class Who:
        def __init__(self, name: bytes) -> None:
            self.name = name

        async def handle_survey(self, data: bytes) -> bytes:
            await asyncio.sleep(0)
            assert 0 < iris.aio.time_left() < 5
            return self.name + data

    async def body(a, b, key):
        await a.register("who", Who(b"a"))
        await b.register("who", Who(b"b"))
        result = await b.survey("who", b"?", timeout=5)
        assert result.complete and result.members_known == 2
        assert result.answers == {a.id: b"a?", b.id: b"b?"}
        with pytest.raises(iris.NoSuchClusterError):
            await a.survey("nobody", b"?", timeout=5)
    run(two_nodes(body))
