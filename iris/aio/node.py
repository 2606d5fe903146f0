"""The embedding API for asyncio programs: `iris.aio.open_node`, with the trio API's methods.

    async with iris.aio.open_node(network_key=key, seeds=[...]) as node:
        await node.register("echo", Echo())        # Echo.handle_request is an asyncio coroutine
        reply = await node.request("echo", b"hi", timeout=1.0)

Every call runs the trio node (`iris.runtime.node`) through the loop's `Guest`, with the same
arguments, results and errors. Handlers are the application's asyncio coroutines, run on its
loop: a handler object has some of `async handle_request(bytes) -> bytes`, `async
handle_broadcast(bytes)`, `async handle_survey(bytes) -> bytes` and `async
handle_tunnel(Tunnel)`; a subscription's handler is `async
fn(bytes)`, called one event at a time, in order. The node's limits apply as in the trio API
(at most `ServiceLimits.max_concurrency` requests of a service handled at once).

Cancellation is asyncio's: cancelling a task waiting in any call (`asyncio.timeout`,
`task.cancel()`) raises `asyncio.CancelledError` in it and cancels the node's side of the
call. A request so abandoned is forgotten by the node at its own timeout, as in the trio API.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import trio

import iris.runtime.node as trio_node
from iris.aio.guest import Guest
from iris.core.limits import ServiceLimits, TopicLimits, check_payload
from iris.core.messages import MAX_SURVEY_BYTES
from iris.errors import ClosedError, IrisError
from iris.runtime.backpressure import TURN_EVERY
from iris.runtime.node import Responder
from iris.runtime.survey import SurveyResult

__all__ = ["Node", "Registration", "Tunnel", "open_node", "time_left"]

# When the caller of the request a handler task serves gives up (time.monotonic()): set in the
# context of the asyncio task that runs the application's `handle_request`.
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("iris_aio_deadline")

EventHandler = Callable[[bytes], Coroutine[Any, Any, None]]
log = logging.getLogger("iris.aio")


class Tunnel:
    """One end of a tunnel: ordered, reliable, flow-controlled messages to one member."""

    def __init__(self, guest: Guest, tunnel: Any) -> None:
        self._guest = guest
        self._tunnel = tunnel  # the trio side's (a node's Tunnel, or a relay client's)

    async def send(self, data: bytes) -> None:
        """Queue one message; waits while the tunnel's send buffer is full."""
        await self._guest.call(self._tunnel.send, data)

    async def receive(self) -> bytes:
        """The next message; `ClosedError` once the peer closed and all was read."""
        data: bytes = await self._guest.call(self._tunnel.receive)
        return data

    async def close(self) -> None:
        await self._guest.call(self._tunnel.close)

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class Registration:
    """A cluster this node serves, until `unregister`."""

    def __init__(self, guest: Guest, registration: trio_node.Registration) -> None:
        self._guest = guest
        self._registration = registration
        self.cluster = registration.cluster

    async def unregister(self) -> None:
        await self._guest.call(self._registration.unregister)


class Node:
    """A running node, for asyncio programs. Obtain one with `open_node`."""

    def __init__(self, guest: Guest, node: trio_node.Node) -> None:
        self._guest = guest
        self._node = node
        self._subscriptions: dict[str, Subscription] = {}
        self._published = 0  # publishes since this side last gave trio a turn

    @property
    def id(self) -> int:
        return self._node.id

    @property
    def address(self) -> tuple[str, int]:
        return self._node.address

    def status(self) -> dict[str, Any]:
        return self._node.status()

    async def register(self, cluster: str, handler: Any,
                       limits: ServiceLimits | None = None) -> Registration:
        """Serve `cluster` with `handler` (see the module docstring)."""
        registration = await self._guest.call(self._node.register, cluster,
                                              handler_for(self._guest, handler), limits)
        return Registration(self._guest, registration)

    async def request(
        self, cluster: str, data: bytes,
        timeout: float = 5.0,  # noqa: ASYNC109 - the request's own deadline, as in the trio API
    ) -> bytes:
        """Ask one member of `cluster`: its reply, or RemoteError, NoSuchClusterError,
        LimitExceededError or TimeoutError (as the trio API)."""
        node, guest = self._node, self._guest
        if node.congested:
            await guest.call(node.wait_for_room)
        answer: Any = guest.loop.create_future()

        def finished(reply: bytes | None, error: IrisError | None) -> None:
            if not answer.done():
                if error is None:
                    answer.set_result(reply)
                else:
                    answer.set_exception(error)

        # Started here, on the asyncio side, between two of trio's ticks (the node's calls need
        # no trio task): with eager link writes the request leaves at once, without waking
        # trio's I/O thread to run it in a tick (measured: that hand-off was most of what the
        # asyncio face cost per request). Errors (ValueError, LimitExceededError, ClosedError)
        # are raised here.
        node.start_request(cluster, data, timeout, finished)
        reply: bytes = await answer
        return reply

    async def survey(
        self, cluster: str, data: bytes,
        timeout: float = 5.0,  # noqa: ASYNC109 - the survey's own deadline, as in the trio API
        max_bytes: int = MAX_SURVEY_BYTES,
    ) -> SurveyResult:
        """Ask every member of `cluster` (`handle_survey`): the answers that came in time and
        how many members the tree knew of (as the trio API)."""
        node, guest = self._node, self._guest
        if node.congested:
            await guest.call(node.wait_for_room)
        outcome: Any = guest.loop.create_future()

        def finished(result: SurveyResult | None, error: IrisError | None) -> None:
            if not outcome.done():
                if error is None:
                    outcome.set_result(result)
                else:
                    outcome.set_exception(error)

        node.start_survey(cluster, data, timeout, finished, max_bytes)  # as `request`
        result: SurveyResult = await outcome
        return result

    async def broadcast(self, cluster: str, data: bytes) -> None:
        await self._guest.call(self._node.broadcast, cluster, data)

    async def subscribe(self, topic: str, handler: EventHandler,
                        limits: TopicLimits | None = None) -> None:
        """Call the coroutine function `handler` with each event of `topic`, one at a time, in
        order; returns once publishes sent afterwards reach this node. Subscribing again
        replaces the handler."""
        subscription = Subscription(self._guest, topic, handler, self._node.event_consumed)
        old, self._subscriptions[topic] = self._subscriptions.get(topic), subscription
        if old is not None:
            old.close()
        try:
            await self._guest.call(self._node.subscribe, topic, subscription, limits)
        except BaseException:
            subscription.close()
            raise

    async def unsubscribe(self, topic: str) -> None:
        subscription = self._subscriptions.pop(topic, None)
        if subscription is not None:
            subscription.close()
        await self._guest.call(self._node.unsubscribe, topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Returns once the event is handed to the node (as the trio API's, which waits only
        while the links are congested)."""
        node, guest = self._node, self._guest
        if node.congested:
            check_payload(data)  # (before the wait, as the trio API's; else start_publish's)
            if node.closed:
                raise ClosedError("node is closed")
            await guest.call(node.wait_for_room)
        else:
            self._published += 1
            if self._published >= TURN_EVERY:
                # A producer that is never held back yields now and then, as in the trio API
                # (`room()`): trio's ticks read the links and flush the batch meanwhile.
                self._published = 0
                await asyncio.sleep(0)
        node.start_publish(topic, data)  # into the node's batch, from this side as requests

    def _close(self) -> None:
        for subscription in self._subscriptions.values():
            subscription.close()
        self._subscriptions.clear()

    async def tunnel(
        self, cluster: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - the opening's own deadline, as in the trio API
    ) -> Tunnel:
        """Open a tunnel to one member of `cluster`."""
        tunnel = await self._guest.call(self._node.tunnel, cluster, timeout)
        return Tunnel(self._guest, tunnel)


def handler_for(guest: Guest, handler: Any, node: bool = True) -> SimpleNamespace:
    """The trio side of an application's handler object: the methods it has (a member
    without `handle_tunnel` refuses tunnels, as in the trio API), each running the
    application's coroutine on its loop (no more at once than the trio side calls). A node
    takes requests in its plain-function form; the relay client only in the async one."""
    methods: dict[str, Callable[..., Any]] = {}
    if hasattr(handler, "handle_request") and not node:
        async def handle_request(data: bytes) -> bytes:
            reply: bytes = await guest.in_asyncio(handler.handle_request(data))
            return reply
        methods["handle_request"] = handle_request
    elif hasattr(handler, "handle_request"):
        def accept_request(data: bytes, responder: Responder) -> None:
            # The node's plain-function form: the core hands no more requests at once than
            # the service admits, and the asyncio task answers when done (no trio task and no
            # wait per request).
            left = responder.time_left()
            if left <= 0:  # its caller gave up while it waited
                responder.drop()
                return
            task = guest.start_in_asyncio(handler.handle_request(data),
                                          (_deadline, time.monotonic() + left))
            # The answer is made on the asyncio side, as requests are started there (see
            # Node.request): no wake of trio's I/O thread to run it in a tick.
            task.add_done_callback(functools.partial(_answer, responder))
        methods["accept_request"] = accept_request
    if hasattr(handler, "handle_survey") and node:
        async def handle_survey(data: bytes) -> bytes:
            # With the survey's deadline for `time_left()`.
            deadline = time.monotonic() + trio_node.time_left()
            answer: bytes = await guest.in_asyncio(handler.handle_survey(data),
                                                   (_deadline, deadline))
            return answer
        methods["handle_survey"] = handle_survey
    if hasattr(handler, "handle_broadcast"):
        async def handle_broadcast(data: bytes) -> None:
            await guest.in_asyncio(handler.handle_broadcast(data))
        methods["handle_broadcast"] = handle_broadcast
    if hasattr(handler, "handle_tunnel"):
        async def handle_tunnel(tunnel: Any) -> None:
            await guest.in_asyncio(handler.handle_tunnel(Tunnel(guest, tunnel)))
        methods["handle_tunnel"] = handle_tunnel
    if not methods:
        raise TypeError(
            "a handler has handle_request, handle_broadcast, handle_survey or handle_tunnel")
    return SimpleNamespace(**methods)


def time_left() -> float:
    """Seconds until the caller of the request being handled gives up (in a `handle_request`
    of a node's handler; in a `handle_survey`, until its answer is too late; infinity
    elsewhere), as `iris.time_left` is for the trio API."""
    return max(0.0, _deadline.get(math.inf) - time.monotonic())


def _answer(responder: Responder, task: asyncio.Task[Any]) -> None:
    """What the application's `handle_request` came to, for its caller (as the trio API
    answers: an exception is the caller's RemoteError)."""
    if task.cancelled():
        responder.fail("the request handler was cancelled")
        return
    error = task.exception()
    if error is not None:
        responder.fail(str(error) or type(error).__name__)
        return
    reply = task.result()
    if isinstance(reply, (bytes, bytearray)):
        responder.reply(bytes(reply))
    else:
        responder.fail(f"handle_request returned {type(reply).__name__}, not bytes")


class Subscription:
    """The events of one topic, for the application's coroutine: one asyncio task calls it
    for each, in order, from a queue the trio side fills. Two ways in:

    - a node's: `hold_event`, the node's plain function form, called with each event as the
      node takes it in (no trio task and no wait per event: with them the asyncio face's
      subscriber cost about 1.4x the trio API's CPU per event). Each event stays counted
      under the topic's limits (`TopicLimits`) until the handler has run on it (`consumed`,
      the node's `event_consumed`), so a handler that falls behind makes the node drop
      events beyond the limits, as the trio API's does, instead of growing this queue. The
      task reports what it consumed whenever the queue is empty, and every REPORT_EVERY
      events while it is not (once per event cost 0.3 us, a tenth of all the subscriber's
      work per event).
    - a relay client's: `accept`, awaited by the client's queue task, which waits while
      this queue holds QUEUE events (the client's own bounded queue is behind it).
    """

    QUEUE = 64
    REPORT_EVERY = 64

    def __init__(self, guest: Guest, topic: str, handler: EventHandler,
                 consumed: Callable[[str, int, int], None] | None = None) -> None:
        self._handler = handler
        self._topic = topic
        self._consumed = consumed
        self._events: deque[bytes] = deque()
        self._taken = 0  # events taken from the queue since the last report
        self._taken_bytes = 0  # ... their payload bytes
        self._ready: asyncio.Future[None] | None = None  # set while the task waits for events
        self._room: trio.Event | None = None  # set when the relay client's side waits for room
        self._closed = False
        self._task = guest.start_in_asyncio(self._consume())

    def hold_event(self, event: bytes) -> None:
        """(a node's side, one event at a time)"""
        if self._closed:  # (replaced, or unsubscribed, and the node has not heard yet)
            if self._consumed is not None:
                self._consumed(self._topic, len(event), 1)
            return
        self._events.append(event)
        ready = self._ready
        if ready is not None:
            self._ready = None
            if not ready.done():  # (else the task was cancelled, by its loop's end)
                ready.set_result(None)

    async def accept(self, event: bytes) -> None:
        """(a relay client's side, one event at a time)"""
        self.hold_event(event)
        if len(self._events) >= self.QUEUE:
            room = self._room = trio.Event()
            await room.wait()

    def close(self) -> None:
        """No more calls of the handler; the events still queued are dropped."""
        self._closed = True
        self._task.cancel()
        events = self._events
        self._taken += len(events)
        self._taken_bytes += sum(map(len, events))
        events.clear()
        self._report()
        room, self._room = self._room, None
        if room is not None:
            room.set()

    def _report(self) -> None:
        """The events taken since the last report are consumed, for the topic's limits."""
        if self._taken and self._consumed is not None:
            self._consumed(self._topic, self._taken_bytes, self._taken)
        self._taken = self._taken_bytes = 0

    async def _consume(self) -> None:
        events, handler = self._events, self._handler
        while True:
            if not events:
                self._report()
                ready = self._ready = asyncio.get_running_loop().create_future()
                await ready
            elif self._taken >= self.REPORT_EVERY:
                self._report()
            event = events.popleft()
            self._taken += 1
            self._taken_bytes += len(event)
            room = self._room
            if room is not None and len(events) <= self.QUEUE // 2:
                self._room = None
                room.set()
            try:
                await handler(event)
            except Exception:  # one bad event must not end the subscription
                log.exception("the event handler of topic %r raised", self._topic)


@asynccontextmanager
async def open_node(**options: Any) -> AsyncIterator[Node]:
    """Start a node, join the ring (or found one without seeds) and yield it; leaving the
    block leaves the ring. The options are `iris.open_node`'s (network_key, listen, seeds,
    join_timeout, ...), with the same errors."""
    # No busy polling by default: in guest mode trio's loop does not sleep in epoll itself,
    # and polling would keep asyncio's loop turning instead.
    options.setdefault("busy_poll_s", 0.0)
    guest = await Guest.acquire()
    try:
        node, leave = await guest.hold(trio_node.open_node(**options))
        node.flush_publishes_by(guest.loop.call_soon)  # (publishes come from asyncio code)
        face = Node(guest, node)
        try:
            yield face
        finally:
            await leave()
            face._close()
    finally:
        await guest.release()
