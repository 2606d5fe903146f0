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
        subscription = Subscription(self._guest, topic, handler)
        old, self._subscriptions[topic] = self._subscriptions.get(topic), subscription
        if old is not None:
            old.task.cancel()
        try:
            await self._guest.call(self._node.subscribe, topic, subscription.accept, limits)
        except BaseException:
            subscription.task.cancel()
            raise

    async def unsubscribe(self, topic: str) -> None:
        subscription = self._subscriptions.pop(topic, None)
        if subscription is not None:
            subscription.task.cancel()
        await self._guest.call(self._node.unsubscribe, topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Returns once the event is handed to the node (as the trio API's, which waits only
        while the links are congested)."""
        node, guest = self._node, self._guest
        check_payload(data)
        if node.closed:
            raise ClosedError("node is closed")
        if node.congested:
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
            subscription.task.cancel()
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
    for each, in order, from a short queue the node's side fills (a task per event, and a
    wait for each, cost 4-6x the trio API's CPU per event). When the queue is full, the node's
    side waits, and the topic's own limits apply behind it as in the trio API."""

    QUEUE = 64

    def __init__(self, guest: Guest, topic: str, handler: EventHandler) -> None:
        self._handler = handler
        self._topic = topic
        self._events: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._room: trio.Event | None = None  # set when the node's side waits for room
        self.task = guest.start_in_asyncio(self._consume())

    async def accept(self, event: bytes) -> None:
        """(trio side, one event at a time)"""
        self._events.append(event)
        self._ready.set()
        if len(self._events) >= self.QUEUE:
            room = self._room = trio.Event()
            await room.wait()

    async def _consume(self) -> None:
        events = self._events
        while True:
            while not events:
                self._ready.clear()
                await self._ready.wait()
            event = events.popleft()
            room = self._room
            if room is not None and len(events) <= self.QUEUE // 2:
                self._room = None
                room.set()
            try:
                await self._handler(event)
            except Exception:  # one bad event must not end the subscription
                log.exception("the event handler of topic %r raised", self._topic)


@asynccontextmanager
async def open_node(**options: Any) -> AsyncIterator[Node]:
    """Start a node, join the ring (or found one without seeds) and yield it; leaving the
    block leaves the ring. The options are `iris.open_node`'s (network_key, listen, seeds,
    join_timeout, ...), with the same errors."""
    guest = await Guest.acquire()
    try:
        node, leave = await guest.hold(trio_node.open_node(**options))
        face = Node(guest, node)
        try:
            yield face
        finally:
            await leave()
            face._close()
    finally:
        await guest.release()
