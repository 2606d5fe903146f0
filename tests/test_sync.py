"""The blocking API (`iris.sync`): real nodes over loopback TCP, each in its own thread, used
from plain threads. Deliveries are awaited with deadlines (`Inbox.wait_for`, on a condition
variable), never with a fixed sleep."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import trio

import iris
import iris.sync
from iris.core.messages import MAX_PAYLOAD
from iris.relay.server import RelayServer
from iris.sync import _EventFeed

DEADLINE_S = 20.0  # for anything awaited here; a loaded machine only makes it slower
MIB = 1024 * 1024


class Inbox:
    """What a handler received, and a wait for it with a deadline."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.items: list[bytes] = []
        self.active = 0  # handler calls under way
        self.most_active = 0

    def put(self, item: bytes) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[bytes]], bool],
                 timeout: float = DEADLINE_S) -> list[bytes]:
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self.items), timeout), self.items
            return list(self.items)

    def heard(self, item: bytes, timeout: float) -> bool:
        """Whether `item` came, or comes within `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: item in self.items, timeout)

    def wait_count(self, count: int, timeout: float = DEADLINE_S) -> list[bytes]:
        return self.wait_for(lambda items: len(items) >= count, timeout)

    def handler(self, item: bytes) -> None:
        """A subscriber: records the event, and how many calls overlapped."""
        with self.tracking():
            self.put(item)

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Counts the calls under way within it, and the most at once."""
        with self._changed:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            yield
        finally:
            with self._changed:
                self.active -= 1


class Worker:
    """A cluster member's handler: plain functions, as a blocking program writes them."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.broadcasts = Inbox()
        self.deadlines: list[float] = []

    def handle_request(self, data: bytes) -> bytes:
        if data == b"fail":
            raise ValueError("asked to fail")
        if data == b"time left":
            self.deadlines.append(iris.sync.time_left())
        return self.name + b":" + data

    def handle_broadcast(self, data: bytes) -> None:
        self.broadcasts.put(data)

    def handle_tunnel(self, tunnel: iris.sync.Tunnel) -> None:
        try:
            while True:
                tunnel.send(tunnel.receive())
        except iris.ClosedError:
            pass


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run `target(i)` in `count` threads started together; re-raise the first failure."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait(DEADLINE_S)
            target(i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    join_all(threads)
    if failures:
        raise failures[0]


def join_all(threads: list[threading.Thread], timeout: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "threads still blocked"


async def serve_relay(trio_node: iris.Node,
                      task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """For `Node.start_trio_task`: a relay server in the node's own thread."""
    await RelayServer(trio_node).serve(0, hosts=("127.0.0.1",), task_status=task_status)


@pytest.fixture
def key() -> bytes:
    return iris.generate_network_key()


@pytest.fixture
def pair(key: bytes) -> Iterator[tuple[iris.sync.Node, iris.sync.Node]]:
    """Two nodes on loopback TCP, each in its own thread."""
    with iris.sync.open_node(key) as a, iris.sync.open_node(key, seeds=[a.address]) as b:
        yield a, b


def test_every_pattern_from_8_threads_at_once(pair):
    """The acceptance: two nodes; a cluster served by plain functions; from 8 threads at
    once, 1,000 requests all answered, broadcasts reaching every member, publishes reaching 3
    subscribers, and a 1 MiB tunnel message each way per thread."""
    a, b = pair
    workers = [Worker(b"a"), Worker(b"b")]
    a.register("work", workers[0])
    b.register("work", workers[1])
    # Three subscribers of "news" on two nodes: node a's own, and two relay clients of node
    # b (a node holds one subscription per topic; its relay hands each event to every client).
    port = b.start_trio_task(serve_relay)
    subscribers = [Inbox(), Inbox(), Inbox()]
    a.subscribe("news", subscribers[0].handler)
    with ExitStack() as stack:
        for inbox in subscribers[1:]:
            client = stack.enter_context(iris.sync.RelayClient.open(port))
            client.subscribe("news", inbox.handler)
        # A relay client's subscribe is not acknowledged: try until every subscriber hears.
        deadline = time.monotonic() + DEADLINE_S
        while not all(inbox.heard(b"probe", 0.05) for inbox in subscribers):
            assert time.monotonic() < deadline, "a relay client's subscription never took"
            a.publish("news", b"probe")
        big = os.urandom(MIB)
        replies: list[int] = []

        def everything(i: int) -> None:
            node = pair[i % 2]  # callers on both nodes
            for k in range(125):
                data = b"%d-%d" % (i, k)
                reply = node.request("work", data, timeout=10)
                assert reply in (b"a:" + data, b"b:" + data)
                replies.append(1)
            node.broadcast("work", b"broadcast %d" % i)
            node.publish("news", b"event %d" % i)
            with node.tunnel("work", timeout=5) as tunnel:
                message = bytes([i]) + big[1:]  # 1 MiB
                tunnel.send(message)
                assert tunnel.receive(timeout=DEADLINE_S) == message

        run_threads(8, everything)
        assert len(replies) == 1000
        expected = sorted(b"broadcast %d" % i for i in range(8))
        for worker in workers:
            assert sorted(worker.broadcasts.wait_count(8)) == expected
        expected = sorted(b"event %d" % i for i in range(8))
        for inbox in subscribers:
            got = inbox.wait_for(lambda items: len([e for e in items if e != b"probe"]) >= 8)
            assert sorted(e for e in got if e != b"probe") == expected
            assert inbox.most_active == 1  # one event of a topic at a time
    assert a.status()["clusters"] == ["work"] and a.status()["topics"] == ["news"]


def test_events_are_handled_in_order_and_unsubscribe(pair):
    a, b = pair
    got = Inbox()
    b.subscribe("ordered", got.handler)
    for k in range(50):
        a.publish("ordered", b"%d" % k)
    assert got.wait_count(50) == [b"%d" % k for k in range(50)]
    b.unsubscribe("ordered")
    assert "ordered" not in b.status()["topics"]
    deadline = time.monotonic() + DEADLINE_S  # the subscription's thread is gone too
    while any(t.name == "iris events ordered" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_blocked_event_handler_holds_events_back_and_loses_none(pair):
    """The handler's thread lags by far more than its hand-over queue: the node's side waits
    for room, the rest wait under the topic's limits, and all arrive in order once it goes on."""
    a, b = pair
    got, go_on = Inbox(), threading.Event()

    def handler(item: bytes) -> None:
        go_on.wait(DEADLINE_S)
        got.handler(item)

    b.subscribe("held", handler)
    sent = [b"%d" % k for k in range(20 * _EventFeed.QUEUE)]
    for data in sent:
        a.publish("held", data)
    go_on.set()
    assert got.wait_count(len(sent)) == sent
    assert got.most_active == 1


def test_errors_are_those_of_the_trio_api(pair):
    a, b = pair
    b.register("work", Worker(b"b"))
    with pytest.raises(iris.RemoteError, match="asked to fail"):
        a.request("work", b"fail", timeout=5)
    with pytest.raises(iris.NoSuchClusterError):
        a.request("nobody", b"x", timeout=5)
    with pytest.raises(iris.NoSuchClusterError):
        a.tunnel("nobody", timeout=5)
    too_big = bytes(MAX_PAYLOAD + 1)
    for call in (a.request, a.broadcast, a.publish):
        with pytest.raises(iris.LimitExceededError):
            call("work", too_big)
    with pytest.raises(ValueError):
        a.request("work", b"x", timeout=0)
    with pytest.raises(TypeError, match="async"):
        a.register("async", type("Async", (), {"handle_request": _async_handler})())
    with pytest.raises(TypeError, match="async"):
        a.subscribe("async", _async_handler)
    # The caller's deadline reaches the handler (iris.sync.time_left, as iris.time_left).
    worker = Worker(b"timed")
    a.register("timed", worker)
    assert b.request("timed", b"time left", timeout=3) == b"timed:time left"
    assert 0 < worker.deadlines[0] <= 3
    with a.tunnel("work", timeout=5) as tunnel:
        with pytest.raises(TimeoutError):  # iris.TimeoutError is the builtin too
            tunnel.receive(timeout=0.05)
        tunnel.send(b"after the timeout")  # nothing was lost or broken
        assert tunnel.receive(timeout=DEADLINE_S) == b"after the timeout"
        with pytest.raises(iris.LimitExceededError):
            tunnel.send(bytes(16 * MIB + 1))


async def _async_handler(data: bytes) -> bytes:
    return data


def test_a_handler_that_never_answers_times_out(pair):
    a, b = pair
    release = threading.Event()

    class Stuck:
        def handle_request(self, data: bytes) -> bytes:
            release.wait(DEADLINE_S)
            return data

    b.register("stuck", Stuck())
    try:
        with pytest.raises(iris.TimeoutError):
            a.request("stuck", b"x", timeout=0.3)
    finally:
        release.set()


def test_a_request_that_waited_for_a_thread_past_its_deadline_is_not_run(key):
    """With every handler thread busy, a request waits for one; if its caller gave up
    meanwhile, its handler is not called (as the trio node skips one that waited for a task)."""
    release = threading.Event()
    handled = Inbox()

    class Slow:
        def handle_request(self, data: bytes) -> bytes:
            handled.put(data)
            if data == b"first":
                release.wait(DEADLINE_S)
            return data

    with iris.sync.open_node(key, handler_threads=1) as b, \
            iris.sync.open_node(key, seeds=[b.address]) as a:
        b.register("slow", Slow())
        first = threading.Thread(target=a.request, args=("slow", b"first", DEADLINE_S))
        first.start()
        try:
            handled.wait_count(1)  # the one thread is busy
            with pytest.raises(iris.TimeoutError):
                a.request("slow", b"second", timeout=0.2)  # waits for the thread, in vain
        finally:
            release.set()
        join_all([first])
        assert a.request("slow", b"third", timeout=DEADLINE_S) == b"third"  # after "second"
        assert handled.items == [b"first", b"third"]
    assert iris.sync.time_left() == float("inf")  # outside a handler


def test_a_blocking_call_from_the_node_thread_is_refused(pair):
    a, _ = pair

    async def call_blocking(trio_node, task_status=trio.TASK_STATUS_IGNORED):
        try:
            a.status()
        except RuntimeError as exc:
            task_status.started(exc)
        else:
            task_status.started(None)

    error = a.start_trio_task(call_blocking)
    assert isinstance(error, RuntimeError) and "own trio thread" in str(error)

    async def another_trio_program():
        with pytest.raises(RuntimeError, match="runs trio"):
            a.status()

    trio.run(another_trio_program)


def test_closing_wakes_blocked_callers_and_never_waits_for_handlers(key):
    """Closing the callers' node: every call still waiting (requests, a tunnel's receive) in
    other threads gets ClosedError. Closing the member's node with its handlers stuck returns
    at once (they are abandoned). Handlers run on at most `handler_threads` threads (here 5:
    the tunnel's handler and four requests'; the other requests wait for a thread)."""
    release = threading.Event()
    entered = Inbox()
    busy = Inbox()  # `most_active`: handlers running at once

    class Member(Worker):
        def handle_request(self, data: bytes) -> bytes:
            with busy.tracking():
                entered.put(data)
                release.wait(DEADLINE_S)
                return data

        def handle_tunnel(self, tunnel: iris.sync.Tunnel) -> None:
            with busy.tracking():
                super().handle_tunnel(tunnel)

    member_cm = iris.sync.open_node(key, handler_threads=5)
    b = member_cm.__enter__()
    caller_cm = iris.sync.open_node(key, seeds=[b.address])
    try:
        a = caller_cm.__enter__()
        b.register("stuck", Member(b"b"))
        tunnel = a.tunnel("stuck", timeout=5)
        tunnel.send(b"open")
        assert tunnel.receive(timeout=DEADLINE_S) == b"open"  # its handler holds a thread
        closed: list[str] = []

        def wait_for_reply(i: int) -> None:
            try:
                if i == 0:
                    tunnel.receive()
                else:
                    a.request("stuck", b"%d" % i, timeout=60)
            except iris.ClosedError:
                closed.append("ok")

        threads = [threading.Thread(target=wait_for_reply, args=(i,)) for i in range(9)]
        for thread in threads:
            thread.start()
        entered.wait_count(4)  # the handler threads are all taken
        caller_cm.__exit__(None, None, None)
        join_all(threads)
        assert len(closed) == 9
        with pytest.raises(iris.ClosedError):
            a.request("stuck", b"after", timeout=1)
        tunnel.close()  # closing what is closed does nothing
        started = time.monotonic()
        member_cm.__exit__(None, None, None)  # its request handlers are still stuck
        assert time.monotonic() - started < DEADLINE_S / 2
        assert busy.most_active == 5
        assert not [t for t in threading.enumerate() if t.name == "iris node"]
    finally:
        release.set()
        caller_cm.__exit__(None, None, None)  # (closed already, unless the test failed)
        member_cm.__exit__(None, None, None)


def unused_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_failed_join_raises_join_error_and_leaves_no_thread(key):
    before = threading.active_count()
    with pytest.raises(iris.JoinError), iris.sync.open_node(
            key, seeds=[("127.0.0.1", unused_port())], join_timeout=0.5):
        pass
    assert threading.active_count() == before


def test_relay_client_round_trip(pair):
    """The blocking relay client against a relay served in a node's thread: a member served by
    plain functions, requests both ways, errors, broadcast, publish, a tunnel, status, and a
    close that wakes a request still waiting."""
    a, b = pair
    with pytest.raises(iris.IrisError, match="no node relay"), \
            iris.sync.RelayClient.open(unused_port()):
        pass
    port = b.start_trio_task(serve_relay)
    a.register("work", Worker(b"a"))
    member = Worker(b"client")
    with iris.sync.RelayClient.open(port, cluster="relayed", handler=member) as client:
        assert a.request("relayed", b"hi", timeout=5) == b"client:hi"
        with pytest.raises(iris.RemoteError, match="asked to fail"):
            a.request("relayed", b"fail", timeout=5)
        assert client.request("work", b"x", timeout=5) == b"a:x"
        with pytest.raises(iris.LimitExceededError):
            client.request("work", bytes(MAX_PAYLOAD + 1), timeout=5)
        a.broadcast("relayed", b"to all")
        assert member.broadcasts.wait_count(1) == [b"to all"]
        assert client.status()["id"] == f"{b.id:032x}"
        with client.tunnel("work", timeout=5) as tunnel:
            tunnel.send(b"m" * MIB)
            assert tunnel.receive(timeout=DEADLINE_S) == b"m" * MIB
        with a.tunnel("relayed", timeout=5) as tunnel:  # to the client's handle_tunnel
            tunnel.send(b"t" * MIB)
            assert tunnel.receive(timeout=DEADLINE_S) == b"t" * MIB

        release = threading.Event()
        entered = Inbox()

        class Stuck:
            def handle_request(self, data: bytes) -> bytes:
                entered.put(data)
                release.wait(DEADLINE_S)
                return data

        a.register("stuck", Stuck())
        closed: list[BaseException] = []

        def wait() -> None:
            try:
                client.request("stuck", b"x", timeout=60)
            except iris.ClosedError as exc:
                closed.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        try:
            entered.wait_count(1)  # the request is in flight: now the client closes
        except BaseException:
            release.set()
            raise
    try:
        join_all([waiter])
    finally:
        release.set()
    assert len(closed) == 1
    with pytest.raises(iris.ClosedError):
        client.request("work", b"after", timeout=1)


def test_a_survey_from_blocking_code(pair):
    class Who:
        def __init__(self, name: bytes) -> None:
            self.name = name

        def handle_survey(self, data: bytes) -> bytes:
            assert iris.sync.time_left() > 0
            return self.name + data

    a, b = pair
    a.register("who", Who(b"a"))
    b.register("who", Who(b"b"))
    result = b.survey("who", b"?", timeout=5)
    assert result.complete and result.answers == {a.id: b"a?", b.id: b"b?"}
