"""The embedding API: `open_node` and `Node`, the public face for trio applications.

    async with iris.open_node(network_key=key, listen="127.0.0.1:0", seeds=[...]) as node:
        registration = await node.register("echo", handler)
        reply = await node.request("echo", b"hi", timeout=1.0)

A handler is any object with some of `async handle_request(bytes) -> bytes`,
`async handle_broadcast(bytes)` and `async handle_tunnel(tunnel)`. Request handlers run
concurrently up to the service's `ServiceLimits.max_concurrency` (the core hands no more at
once and refuses what overflows its queue); an exception in `handle_request` reaches the caller
as `RemoteError` with its message. Topic handlers run one event at a time, in order.

Integrations that only pass messages on (the relay hands them to its clients) may instead give
plain functions, called at once from the node's own processing: a handler's
`accept_request(bytes, Responder)` and `accept_broadcast(bytes)`, a subscription's
`accept_event(bytes)`, and `Node.start_request` with a callback. They must not block; they save
the task switches of the async forms (about half of what a relayed request costs the node).
A subscription whose plain function only queues each event for a consumer of its own (the
asyncio face's) gives `hold_event(bytes)` instead: each event then stays counted under the
topic's limits until the handler reports it consumed (`Node.event_consumed`), so a consumer
that falls behind makes the node drop events beyond the limits, as a slow async handler does,
instead of growing the handler's queue.

Why this module is longer than the others: `Node` is one class, and most of its length is
pairs that belong together: each call that hands work to the core, and the handler of the
core's event that finishes it (a request and its `RequestDone`, a join and its `Joined`, a
tunnel opening and its `TunnelOpened` or `TunnelClosed`), both reading the same tables of what
is waiting. Split by feature, each pair would reach into another module's tables. What stands
on its own lives elsewhere: the `Tunnel` (`iris.runtime.tunnel`), handler workers
(`iris.runtime.workers`) and queues (`iris.runtime.handler_queue`), the driver
(`iris.runtime.driver`).
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import trio

from iris.core import (
    LOST,
    NO_MEMBERS,
    OK,
    REFUSED,
    REMOTE_ERROR,
    TIMEOUT,
    MessagingConfig,
    cluster_group,
)
from iris.core import events as ev
from iris.core.limits import ENTRY_COST, ServiceLimits, TopicLimits, check_payload
from iris.core.messages import MAX_PAYLOAD, MAX_SURVEY_ANSWERS, MAX_SURVEY_BYTES
from iris.errors import (
    ClosedError,
    IrisError,
    JoinError,
    LimitExceededError,
    NoSuchClusterError,
    RemoteError,
    TimeoutError,
)
from iris.runtime.busy_poll import BusyPoll
from iris.runtime.driver import Runtime
from iris.runtime.first_step import on_first_wait
from iris.runtime.handler_queue import HandlerQueue
from iris.runtime.pause import Spawner
from iris.runtime.survey import SurveyResult
from iris.runtime.transport import Address, MemoryTransport, TcpTransport
from iris.runtime.tunnel import Tunnel
from iris.runtime.workers import WorkerPool
from overlay.config import OverlayConfig
from overlay.link_policy import LinkPolicy

__all__ = ["Node", "NodeObserver", "Registration", "Responder", "SurveyResult", "open_node",
           "time_left"]

EventHandler = Callable[[bytes], Awaitable[None]]
log = logging.getLogger("iris.node")


def parse_address(value: str | tuple[str, int]) -> Address:
    if isinstance(value, tuple):
        return value[0], int(value[1])
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if int(port) > 65535:
        raise ValueError(f"port {port} is out of range (0-65535) in {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Registration:
    """Handle returned by `Node.register`; `await unregister()` ends the membership."""

    def __init__(self, node: Node, cluster: str) -> None:
        self._node, self.cluster = node, cluster
        self._active = True

    async def unregister(self) -> None:
        if self._active:
            self._active = False
            core = self._node._runtime.core
            self._node._runtime.call(lambda: core.unregister(self.cluster))
            if cluster_group(self.cluster) not in core.services:  # the last registration
                self._node._handlers.pop(self.cluster, None)


_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("iris_request_deadline")


def time_left() -> float:
    """Seconds until the caller of the request being handled gives up (in `handle_request`
    and what it awaits; infinity elsewhere). A handler with a long job can stop early."""
    deadline = _deadline.get(math.inf)
    return max(0.0, deadline - trio.current_time())


class Responder:
    """How an `accept_request` handler answers: `reply(data)`, `fail(text)` or `drop()`, once (later
    calls, and calls after the node closed, are ignored). `deadline` (trio time) is when the
    caller gives up."""

    __slots__ = ("_node", "_token", "deadline")

    def __init__(self, node: Node, token: int, deadline: float) -> None:
        self._node: Node | None = node
        self._token = token
        self.deadline = deadline

    def time_left(self) -> float:
        return max(0.0, self.deadline - trio.current_time())

    def reply(self, data: bytes) -> None:
        if len(data) > MAX_PAYLOAD:
            self.fail(f"reply of {len(data)} bytes exceeds {MAX_PAYLOAD}")
        else:
            self._answer(bytes(data), None)

    def fail(self, message: str) -> None:
        self._answer(b"", message or "request failed")

    def drop(self) -> None:
        """Not started: the caller's deadline passed before the request could be (no answer
        is sent; the caller's own timeout reports it, as for a request that arrived late)."""
        node, self._node = self._node, None
        if node is not None and not node._closed:
            core = node._runtime.core
            node._runtime.call(lambda: core.expired(self._token))

    def _answer(self, data: bytes, error: str | None) -> None:
        node, self._node = self._node, None
        if node is not None and not node._closed:
            core = node._runtime.core
            node._runtime.call(lambda: core.reply(self._token, data, error))


RequestCallback = Callable[[bytes | None, IrisError | None], None]
SurveyCallback = Callable[[SurveyResult | None, IrisError | None], None]
_T = TypeVar("_T")


class NodeObserver(Protocol):
    """What a `Node.observer` is told (iris.metrics counts it). Called from the node's own
    processing: each method must return at once and must not raise."""

    def request_done(self, error: IrisError | None, seconds: float) -> None:
        """A request this node started ended (None: answered), `seconds` after it started."""

    def tunnel_opened(self, code: int | None, seconds: float) -> None:
        """A tunnel this node opened is open (None) or failed to (its close code, as in
        iris.core.messages), `seconds` after the opening started."""

    def sent(self, what: str) -> None:
        """A "broadcast" or a "publish" left this node."""

    def tunnel_sent(self, nbytes: int) -> None:
        """A tunnel message of `nbytes` was queued on a tunnel of this node's."""

    def events(self, events: list[ev.Event]) -> None:
        """What the core hands the node, before the node acts on it."""


class Node:
    """A running node. Obtain one with `open_node`."""

    def __init__(self, runtime: Runtime, nursery: Spawner) -> None:
        self._runtime = runtime
        self._nursery = nursery
        self._workers = WorkerPool(nursery)
        runtime.on_events = self._on_events
        # req_id -> what to call with the outcome, and the cluster asked (for its errors)
        self._waiting: dict[int, tuple[RequestCallback, str]] = {}
        self._early: dict[int, ev.RequestDone] = {}  # outcomes within `core.request` calls
        self._surveying: dict[int, SurveyCallback] = {}  # sid -> what to call with the outcome
        self._early_surveys: dict[int, ev.SurveyDone] = {}  # outcomes within `core.survey`
        self._starting = 0  # `start_request` calls under way (a callback may start another)
        self._joined: dict[tuple[str, bool], trio.Event] = {}
        self._handlers: dict[str, Any] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._tunnels: dict[tuple[int, int], Tunnel] = {}
        self._opening: dict[tuple[int, int], trio.Event] = {}
        self._closed = False
        self.observer: NodeObserver | None = None  # (metrics: see NodeObserver)
        # What the node does with each kind of event the core emits (iris.core.events).
        self._event_handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.RequestDone: self._on_request_done,
            ev.RequestReceived: self._on_request_received,
            ev.BroadcastReceived: self._on_broadcast_received,
            ev.EventReceived: self._on_event_received,
            ev.Joined: self._on_joined,
            ev.TunnelOpened: self._on_tunnel_opened,
            ev.TunnelIncoming: self._on_tunnel_incoming,
            ev.TunnelDrained: self._on_tunnel_drained,
            ev.TunnelMessage: self._on_tunnel_message,
            ev.TunnelClosed: self._on_tunnel_closed,
            ev.SurveyReceived: self._on_survey_received,
            ev.SurveyDone: self._on_survey_done,
        }

    # ------------------------------------------------------------------------- facts
    @property
    def address(self) -> Address:
        return self._runtime.host, self._runtime.port

    @property
    def id(self) -> int:
        return self._runtime.node_id

    @property
    def busy_poll(self) -> BusyPoll:
        """Integrations that read sockets of their own (the relay) poke it on traffic."""
        return self._runtime.busy_poll

    def status(self) -> dict[str, Any]:
        """A snapshot of the node's view: id, peers, leaf set, table fill, groups, counters."""
        rt = self._runtime
        node = rt.node
        return {
            "id": f"{node.id:032x}",
            "address": f"{rt.host}:{rt.port}",
            "state": node.state,
            "links": len(rt.links),
            "leaf_set": [f"{n:032x}" for n in node.leaf.members()],
            "table_entries": len(node.table),
            "clusters": sorted(s.name for s in rt.core.services.values()),
            "topics": sorted(t.name for t in rt.core.topics.values()),
            "trees": len(rt.core.trees),
            "tunnels": len(rt.core.tunnels),
            "requests_waiting": len(self._waiting),  # this node's callers waiting for answers
            "messages_sent": {
                "maintenance": node.sent[0], "join": node.sent[1], "routed": node.sent[2]},
            "counters": {**rt.counters, **rt.core.counters},
        }

    @property
    def closed(self) -> bool:
        """The node has left (or is leaving): calls raise ClosedError."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("node is closed")

    # ------------------------------------------------------------------- clusters
    async def register(self, cluster: str, handler: Any,
                       limits: ServiceLimits | None = None) -> Registration:
        """Join `cluster`; returns once requests sent afterwards can reach this member (the
        core keeps grafting until then: bound the wait with `trio.fail_after` if need be; a
        wait cut short leaves no membership behind)."""
        self._check_open()
        self._handlers[cluster] = handler
        registration = Registration(self, cluster)
        core = self._runtime.core
        try:
            await self._join(cluster, False, lambda: core.register(cluster, limits))
        except BaseException:
            if not self._closed:  # (unregister has no checkpoint: a cancelled scope lets it run)
                await registration.unregister()
            raise
        return registration

    async def request(
        self, cluster: str, payload: bytes,
        timeout: float = 5.0,  # noqa: ASYNC109 - the request's own deadline, not a cancel scope
    ) -> bytes:
        """Ask one member of `cluster`: its reply, or RemoteError, NoSuchClusterError,
        LimitExceededError or TimeoutError. `timeout` travels with the request into the core,
        whose one deadline heap turns silence into TimeoutError."""
        pressure = self._runtime.backpressure
        if not pressure.free():
            await pressure.room()
        outcome: _Outcome[bytes] = _Outcome()
        self.start_request(cluster, payload, timeout, outcome)
        return await outcome.value()

    def start_request(self, cluster: str, payload: bytes, timeout: float,
                      on_done: RequestCallback) -> None:
        """Send a request without waiting: `on_done(reply, None)` or `on_done(None, error)` is
        called once, from the node's event processing (it must not block). Unlike `request`,
        this does not wait while the links are congested; callers pace themselves."""
        self._check_open()
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        check_payload(payload)
        if self.observer is not None:
            on_done = _observed(on_done, self.observer, trio.current_time())
        self._starting += 1  # an outcome can come before `core.request` returns its id
        try:
            req_id = self._runtime.call(self._runtime.core.request, cluster, payload, timeout)
        finally:
            self._starting -= 1
        early = self._early.pop(req_id, None)
        if early is None:
            self._waiting[req_id] = (on_done, cluster)
        else:
            _finish(on_done, cluster, early)

    async def survey(
        self, cluster: str, payload: bytes,
        timeout: float = 5.0,  # noqa: ASYNC109 - the survey's own deadline, not a cancel scope
        max_bytes: int = MAX_SURVEY_BYTES,
    ) -> SurveyResult:
        """Ask every member of `cluster` and gather their answers (`handle_survey`): the
        answers that came in time and how many members the cluster's tree knew of
        (`SurveyResult.complete` when all answered). The deadline travels with the question;
        a member that fails or is too late counts as not answered, never as an error of the
        survey. NoSuchClusterError when the tree knew of no member; LimitExceededError when
        the answers exceed `max_bytes` (at most 8 MiB) or 65,536 members; TimeoutError when
        no answers came back at all (the root failed)."""
        await self._runtime.backpressure.room()
        outcome: _Outcome[SurveyResult] = _Outcome()
        self.start_survey(cluster, payload, timeout, outcome, max_bytes)
        return await outcome.value()

    def start_survey(self, cluster: str, payload: bytes, timeout: float,
                     on_done: SurveyCallback, max_bytes: int = MAX_SURVEY_BYTES) -> None:
        """`survey` without waiting: `on_done(result, None)` or `on_done(None, error)` is called
        once, from the node's event processing (as `start_request`)."""
        self._check_open()
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        if not 0 < max_bytes <= MAX_SURVEY_BYTES:
            raise ValueError(f"max_bytes must be in 1..{MAX_SURVEY_BYTES}")
        check_payload(payload, "survey question")
        self._starting += 1
        try:
            sid = self._runtime.call(
                lambda: self._runtime.core.survey(cluster, payload, timeout, max_bytes))
        finally:
            self._starting -= 1

        def named(result: SurveyResult | None, error: IrisError | None) -> None:
            on_done(result, error and _named(error, cluster))

        early = self._early_surveys.pop(sid, None)
        if early is None:
            self._surveying[sid] = named
        else:
            _finish_survey(named, early)

    @property
    def congested(self) -> bool:
        """More outgoing data is queued than the high-water mark: `wait_for_room` would wait."""
        return self._runtime.backpressure.congested

    async def wait_for_room(self) -> None:
        """Return once the links can take more: at once, unless more than the high-water mark
        of outgoing data is queued (what `request`, `broadcast` and `publish` wait for)."""
        await self._runtime.backpressure.room()

    async def broadcast(self, cluster: str, payload: bytes) -> None:
        self._check_open()
        check_payload(payload)
        await self._runtime.backpressure.room()
        self._runtime.call(lambda: self._runtime.core.broadcast(cluster, payload))
        if self.observer is not None:
            self.observer.sent("broadcast")

    # --------------------------------------------------------------------- topics
    async def subscribe(self, topic: str, handler: EventHandler | Any,
                        limits: TopicLimits | None = None) -> None:
        """Receive the events of `topic`; returns once publishes sent afterwards reach us (as
        `register` does). `handler` is an async function of the event, or an object whose
        plain `accept_event(bytes)` or `hold_event(bytes)` takes each event at once (see the
        module docstring). Subscribing again to a topic replaces its handler (its limits stay
        the first's)."""
        self._check_open()
        old = self._subscriptions.get(topic)
        if old is not None:  # subscribing again replaces the handler
            for payload in old.queue.stop():  # (dropped with it: no longer counted)
                self._runtime.core.event_done(topic, len(payload))
        hold = getattr(handler, "hold_event", None)
        take = hold or getattr(handler, "accept_event", None)
        queue = HandlerQueue(handler, f"the event handler of topic {topic!r}")
        sub = self._subscriptions[topic] = _Subscription(queue, take, hold is not None)
        if take is None:  # otherwise events are handed over at once
            self._nursery.start_soon(self._run_subscription, topic, queue)
        if old is not None:  # the core holds the topic already (its limits stay)
            joining = self._joined.get((topic, True))
            if joining is not None:  # (the first subscription's join is still under way)
                await joining.wait()
            return
        core = self._runtime.core
        try:
            await self._join(topic, True, lambda: core.subscribe(topic, limits))
        except BaseException:
            if not self._closed and self._subscriptions.get(topic) is sub:
                await self.unsubscribe(topic)  # (no checkpoint in it: see register)
            raise

    async def _join(self, name: str, topic: bool, start: Callable[[], None]) -> None:
        """Run `start` (the core's register or subscribe) and wait for its `Joined`, which
        may come within the call. Waiters for one name share an event, forgotten once nobody
        waits: names come from applications and relay clients, so the table holds only the
        joins in progress."""
        key = (name, topic)
        joined = self._joined.get(key)
        if joined is None or joined.is_set():
            joined = self._joined[key] = trio.Event()
        try:
            self._runtime.call(start)
            if not joined.is_set():
                await joined.wait()
            elif trio.current_effective_deadline() <= trio.current_time():
                await trio.lowlevel.checkpoint()  # a deadline already past cuts it short, as ever
            else:  # joined within the call (this node is the root, or in the tree): no pass
                await trio.lowlevel.checkpoint_if_cancelled()
        finally:
            if self._joined.get(key) is joined and not joined.statistics().tasks_waiting:
                del self._joined[key]

    async def unsubscribe(self, topic: str) -> None:
        sub = self._subscriptions.pop(topic, None)
        if sub is not None:
            sub.queue.stop()
            self._runtime.call(lambda: self._runtime.core.unsubscribe(topic))

    async def publish(self, topic: str, payload: bytes) -> None:
        self._check_open()
        check_payload(payload)
        await self._runtime.backpressure.room()
        self._runtime.publish(topic, payload)
        if self.observer is not None:
            self.observer.sent("publish")

    def start_publish(self, topic: str, payload: bytes) -> None:
        """`publish` without waiting while the links are congested: callers pace themselves
        (`congested`, `wait_for_room`), as with `start_request`."""
        self._check_open()
        check_payload(payload)
        self._runtime.publish(topic, payload)
        if self.observer is not None:
            self.observer.sent("publish")

    def event_consumed(self, topic: str, nbytes: int, count: int = 1) -> None:
        """`count` events, `nbytes` of payload in all, that a `hold_event` handler of `topic`
        held are consumed (or dropped): they no longer count under the topic's limits (which
        charge each event ENTRY_COST on top of its payload). A plain call, from any code on
        the node's thread: as for the async handlers' events, freeing room makes no output,
        so it needs no pass through the runtime's output."""
        self._runtime.core.event_done(topic, nbytes + (count - 1) * ENTRY_COST)

    def flush_publishes_by(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Queued publishes leave from `call_soon(fn)` callbacks instead of the node's batch
        task: for a node run as a guest of another loop, whose publishers are that loop's
        code (`iris.runtime.publish_batch`)."""
        self._runtime.publishes.flush_by(call_soon)

    async def _run_subscription(self, topic: str, queue: HandlerQueue) -> None:
        runtime = self._runtime
        # event_done only frees room under the topic's limits: it makes no output, so it
        # needs no pass through the runtime's output (as for `accept_event`).
        await queue.run(
            done=lambda payload: runtime.core.event_done(topic, len(payload)),
            failed=lambda: runtime.count("event_handler_errors"))

    # -------------------------------------------------------------------- tunnels
    async def tunnel(
        self, cluster: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - the opening's own deadline, not a cancel scope
    ) -> Tunnel:
        """Open a tunnel to one member of `cluster`. `timeout` travels with the opening into
        the core, which gives up on it then (the relay passes its clients' deadlines on)."""
        self._check_open()
        runtime = self._runtime

        def open_it() -> tuple[Tunnel, trio.Event]:
            # The tunnel is on record before the core's events are handled: its outcome may
            # be among them (refused here, no members with this node as the root, or opened
            # at once by a member on this very node).
            key = runtime.core.open_tunnel(cluster, timeout)
            tunnel = self._tunnels[key] = Tunnel(runtime, key, self._tunnel_sent)
            opened = self._opening[key] = trio.Event()
            return tunnel, opened

        started = trio.current_time()
        opening: tuple[Tunnel, trio.Event] = runtime.call(open_it)
        tunnel, opened = opening
        key = tunnel.key
        await opened.wait()
        self._opening.pop(key, None)
        if self.observer is not None:
            code = None if tunnel._opened else tunnel._closed_code
            self.observer.tunnel_opened(code, trio.current_time() - started)
        if self._closed and not tunnel._opened:
            raise ClosedError("node closed")
        if not tunnel._opened:  # closed before it opened (a tunnel that opened and closed at
            # once still hands over the data sent before the close)
            self._tunnels.pop(key, None)
            assert tunnel._closed_code is not None and tunnel._closed_reason is not None
            raise _named(_error(tunnel._closed_code, tunnel._closed_reason), cluster)
        return tunnel

    # ---------------------------------------------------------------------- events
    def _on_events(self, events: list[ev.Event]) -> None:
        if self.observer is not None:
            self.observer.events(events)
        handlers = self._event_handlers
        for event in events:
            handlers[type(event)](event)

    def _on_request_done(self, event: ev.RequestDone) -> None:
        waiting = self._waiting.pop(event.req_id, None)
        if waiting is not None:
            _finish(*waiting, event)
        elif self._starting:  # within `core.request`: see start_request
            self._early[event.req_id] = event

    def _on_request_received(self, event: ev.RequestReceived) -> None:
        accept = getattr(self._handlers.get(event.cluster), "accept_request", None)
        if accept is None:
            self._runtime.hold_acks = True  # until it replies or waits: see Runtime
            self._workers.submit(self._serve_request, event)
        else:
            deadline = self._runtime.trio_time(event.deadline)
            self._accept(accept, event.payload, Responder(self, event.token, deadline),
                         "accept_request")

    def _on_broadcast_received(self, event: ev.BroadcastReceived) -> None:
        accept = getattr(self._handlers.get(event.cluster), "accept_broadcast", None)
        if accept is None:
            self._workers.submit(self._serve_broadcast, event)
        else:
            self._accept(accept, event.payload, None, "accept_broadcast")
            self._runtime.core.broadcast_done(event.cluster)  # what it drains: this loop

    def _on_event_received(self, event: ev.EventReceived) -> None:
        sub = self._subscriptions.get(event.topic)
        if sub is None:
            return
        queue, take, holds = sub
        if take is None:
            queue.put(event.payload)
        elif not self._accept(take, event.payload, None,
                              "hold_event" if holds else "accept_event") or not holds:
            # consumed at once, or refused by raising: no longer counted under the limits
            self._runtime.core.event_done(event.topic, len(event.payload))

    def _on_survey_done(self, event: ev.SurveyDone) -> None:
        on_done = self._surveying.pop(event.sid, None)
        if on_done is not None:
            _finish_survey(on_done, event)
        elif self._starting:  # within `core.survey`: see start_survey
            self._early_surveys[event.sid] = event

    def _on_survey_received(self, event: ev.SurveyReceived) -> None:
        handler = self._handlers.get(event.cluster)
        if handler is None or not hasattr(handler, "handle_survey"):
            # No fallback to handle_request: see `_serve_survey`.
            self._runtime.count("surveys_without_handler")
            core = self._runtime.core  # counted as not answered; its batch may go now
            self._runtime.call(lambda: core.survey_answer(event.token, None))
        else:
            self._workers.submit(self._serve_survey, event)

    def _on_joined(self, event: ev.Joined) -> None:
        joined = self._joined.get((event.name, event.topic))
        if joined is not None:
            joined.set()

    def _on_tunnel_opened(self, event: ev.TunnelOpened) -> None:
        tunnel = self._tunnels.get(event.key)
        if tunnel is not None:
            tunnel._opened = True
        opened = self._opening.get(event.key)
        if opened is not None:
            opened.set()

    def _tunnel_sent(self, nbytes: int) -> None:
        if self.observer is not None:
            self.observer.tunnel_sent(nbytes)

    def _on_tunnel_incoming(self, event: ev.TunnelIncoming) -> None:
        key = event.key
        tunnel = self._tunnels[key] = Tunnel(self._runtime, key, self._tunnel_sent)
        handler = self._handlers.get(event.cluster)
        if handler is not None and hasattr(handler, "handle_tunnel"):
            self._nursery.start_soon(self._serve_tunnel, handler, tunnel)
        else:
            core = self._runtime.core
            self._runtime.call(lambda: core.tunnel_close(key, "no tunnel handler"))

    def _on_tunnel_drained(self, event: ev.TunnelDrained) -> None:
        tunnel = self._tunnels.get(event.key)
        if tunnel is not None:
            tunnel._drained.set()

    def _on_tunnel_message(self, event: ev.TunnelMessage) -> None:
        tunnel = self._tunnels.get(event.key)
        if tunnel is not None:
            tunnel._message(event.data)

    def _on_tunnel_closed(self, event: ev.TunnelClosed) -> None:
        tunnel = self._tunnels.pop(event.key, None)
        if tunnel is not None:
            tunnel._closed(event.code, event.reason)
        opened = self._opening.get(event.key)
        if opened is not None:
            opened.set()

    def _accept(self, accept: Callable[..., None], payload: bytes, responder: Responder | None,
                what: str) -> bool:
        """Run a plain handler function: False if it raised (what it raised is logged, and a
        request fails)."""
        try:
            if responder is None:
                accept(payload)
            else:
                accept(payload, responder)
        except Exception as exc:  # one bad message must not take the node down
            log.exception("%s raised", what)
            self._runtime.count(f"{what}_errors")
            if responder is not None:
                responder.fail(str(exc) or type(exc).__name__)
            return False
        return True

    def _request_waits(self) -> None:
        """A request handler waits: its acknowledgements leave now, and the jobs queued behind
        it get workers of their own (`WorkerPool.spread`)."""
        self._runtime.release_acks()
        self._workers.spread()

    async def _serve_request(self, event: ev.RequestReceived) -> None:
        handler = self._handlers.get(event.cluster)
        core = self._runtime.core
        deadline = self._runtime.trio_time(event.deadline)
        if self._runtime.clock() >= deadline:  # waited for a worker past its caller's patience
            self._runtime.release_acks()
            self._runtime.count("requests_expired_in_queue")  # the core counts its own
            self._runtime.call(core.expired, event.token)
            return
        _deadline.set(deadline)
        try:
            if handler is None or not hasattr(handler, "handle_request"):
                raise IrisError("no request handler registered")
            reply = await on_first_wait(handler.handle_request(event.payload),
                                        self._request_waits)
            if not isinstance(reply, (bytes, bytearray)):
                raise TypeError(f"handle_request returned {type(reply).__name__}, not bytes")
            data = bytes(reply)
            check_payload(data)
            self._runtime.call(core.reply, event.token, data)
        except Exception as exc:  # the caller gets the text as RemoteError
            message = str(exc) or type(exc).__name__
            self._runtime.call(lambda: core.reply(event.token, error=message))
        finally:  # (the reply took them along if it was written at once)
            self._runtime.release_acks()

    async def _serve_survey(self, event: ev.SurveyReceived) -> None:
        """Run `handle_survey` and pass its answer on (None, counted as not answered, when it
        fails, returns no bytes, or is too late). Only `handle_survey` answers surveys, never
        `handle_request`: a request handler is written to run on one member per request (a
        job taken from a queue, a counter bumped), and a survey would run it on every member
        at once."""
        handler = self._handlers.get(event.cluster)
        core = self._runtime.core
        deadline = self._runtime.trio_time(event.deadline)
        answer: bytes | None = None
        if handler is None:  # unregistered meanwhile
            pass
        elif trio.current_time() < deadline:
            _deadline.set(deadline)
            try:
                reply = await on_first_wait(handler.handle_survey(event.payload),
                                            self._workers.spread)
                if not isinstance(reply, (bytes, bytearray)):
                    raise TypeError(f"handle_survey returned {type(reply).__name__}, not bytes")
                answer = bytes(reply)
                check_payload(answer, "survey answer")
            except Exception:  # a member's failure: not answered, never the survey's error
                log.exception("handle_survey of cluster %r raised", event.cluster)
                self._runtime.count("survey_handler_errors")
                answer = None
        else:
            self._runtime.count("surveys_expired_in_queue")
        if not self._closed:
            self._runtime.call(lambda: core.survey_answer(event.token, answer))

    async def _serve_broadcast(self, event: ev.BroadcastReceived) -> None:
        handler = self._handlers.get(event.cluster)
        try:
            if handler is not None and hasattr(handler, "handle_broadcast"):
                await on_first_wait(handler.handle_broadcast(event.payload),
                                    self._workers.spread)
        except Exception:  # one bad message must not take the node down
            log.exception("handle_broadcast of cluster %r raised", event.cluster)
            self._runtime.count("broadcast_handler_errors")
        finally:
            self._runtime.call(lambda: self._runtime.core.broadcast_done(event.cluster))

    async def _serve_tunnel(self, handler: Any, tunnel: Tunnel) -> None:
        try:
            await handler.handle_tunnel(tunnel)
        except Exception:  # closes this tunnel, not the node
            log.exception("handle_tunnel raised")
            self._runtime.count("tunnel_handler_errors")
        finally:
            await tunnel.close()

    # ------------------------------------------------------------------- shutdown
    async def _shutdown(self) -> None:
        self._close_calls()
        self._runtime.leave()
        await self._runtime.close()

    def _crash(self) -> None:
        """Stop as a killed process would (for `iris.testing`'s fault injection): the ring is
        not told; the peers find out as they do of a crash."""
        self._close_calls()
        self._runtime.crash()

    def _close_calls(self) -> None:
        """Everything waiting on the node ends: requests with ClosedError, tunnels closed
        (a `receive` or `send` waiting on one raises ClosedError, an opening too)."""
        self._closed = True
        waiting, self._waiting = self._waiting, {}
        for on_done, _ in waiting.values():
            on_done(None, ClosedError("node closed"))
        surveying, self._surveying = self._surveying, {}
        for on_survey in surveying.values():
            on_survey(None, ClosedError("node closed"))
        tunnels, self._tunnels = self._tunnels, {}
        for tunnel in tunnels.values():
            tunnel._closed(LOST, "node closed")
        for opened in self._opening.values():
            opened.set()


class _Subscription(NamedTuple):
    """One topic's handler on this node."""

    queue: HandlerQueue  # an async handler's events, drained by its task; stopped when replaced
    take: Callable[[bytes], None] | None  # a plain handler's `hold_event` or `accept_event`
    holds: bool  # `hold_event`: the handler reports what it consumed (`event_consumed`)


def _observed(on_done: RequestCallback, observer: NodeObserver,
              started: float) -> RequestCallback:
    """`on_done`, then `observer` told how the request ended and how long it took."""

    def done(reply: bytes | None, error: IrisError | None) -> None:
        seconds = trio.current_time() - started
        on_done(reply, error)
        observer.request_done(error, seconds)

    return done


class _Outcome(Generic[_T]):
    """The callback a waiting `request` or `survey` hands to its `start_*`: what it is called
    with, and the wait for that call.

    The one waiting task is parked and rescheduled directly (`trio.lowlevel`), not through a
    `trio.Event` and its parking lot: every request pays for this wait."""

    __slots__ = ("_result", "_error", "_done", "_waiter")

    def __init__(self) -> None:
        self._result: _T | None = None
        self._error: IrisError | None = None
        self._done = False
        self._waiter: trio.lowlevel.Task | None = None

    def __call__(self, result: _T | None, error: IrisError | None) -> None:
        self._result, self._error = result, error
        self._done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    async def value(self) -> _T:
        """The result once the call came, or its error raised."""
        if self._done:
            await trio.lowlevel.checkpoint()
        else:
            self._waiter = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                self._waiter = None  # cancelled: the call, if it comes, wakes nobody
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        if self._error is not None:
            raise self._error
        assert self._result is not None  # success always carries a result
        return self._result


def _finish(on_done: RequestCallback, cluster: str, outcome: ev.RequestDone) -> None:
    if outcome.status == OK:
        on_done(outcome.payload, None)
    else:
        on_done(None, _named(_error(outcome.status, outcome.error), cluster))


def _finish_survey(on_done: SurveyCallback, outcome: ev.SurveyDone) -> None:
    if outcome.status != OK:
        on_done(None, _error(outcome.status, outcome.error))
    elif outcome.overflow:
        on_done(None, LimitExceededError(
            f"survey answers exceed its limits (max_bytes, at most {MAX_SURVEY_BYTES}; "
            f"{MAX_SURVEY_ANSWERS} members): {len(outcome.answers)} of {outcome.known} kept"))
    else:
        on_done(SurveyResult(dict(outcome.answers), outcome.known), None)


# The application's error for an outcome code of the core (iris.core.messages): a request's
# status, or the code of a tunnel that closed before it opened. A code with no error of its
# own (a tunnel BROKEN or LOST) is a plain IrisError.
_ERRORS: dict[int, type[IrisError]] = {
    REMOTE_ERROR: RemoteError,
    NO_MEMBERS: NoSuchClusterError,
    REFUSED: LimitExceededError,
    TIMEOUT: TimeoutError,
}


def _error(code: int, text: str) -> IrisError:
    return _ERRORS.get(code, IrisError)(text)


def _named(error: IrisError, cluster: str) -> IrisError:
    """"no members" with the cluster's name (the root that found none knows only its hash)."""
    if type(error) is NoSuchClusterError:
        return NoSuchClusterError(f"no members in cluster {cluster!r}")
    return error


@asynccontextmanager
async def open_node(
    network_key: bytes,
    listen: str | Address = "127.0.0.1:0",
    seeds: list[str | Address] | tuple[str | Address, ...] = (),
    join_timeout: float = 30.0,
    overlay_config: OverlayConfig | None = None,
    messaging_config: MessagingConfig | None = None,
    transport: TcpTransport | MemoryTransport | None = None,
    busy_poll_s: float = 250e-6,
    link_policy: LinkPolicy | None = None,
) -> AsyncIterator[Node]:
    """Start a node, join the ring (or found one when there are no seeds), and yield it.
    Leaving the block leaves the ring gracefully. `busy_poll_s` trades CPU for latency: after
    traffic the node polls this long before its thread sleeps, unless other threads want the
    CPU (iris.runtime.busy_poll); 0 turns it off. `link_policy` changes how the node treats its
    connections to other nodes (`overlay.link_policy.LinkPolicy`: when idle ones close, how
    many stay open, when a stalled one is given up)."""
    host, port = parse_address(listen)
    runtime = Runtime(network_key, host, port, overlay_config, messaging_config,
                      transport=transport, busy_poll=BusyPoll(busy_poll_s),
                      link_policy=link_policy)
    join_failed = False
    join_error: BaseException | None = None  # the seeds refused us: see Runtime._reach_seeds
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(runtime.serve, [parse_address(s) for s in seeds], join_timeout)
        except* trio.TooSlowError:
            join_failed = True
        except* JoinError as group:
            join_failed = True
            join_error = group
            while isinstance(join_error, BaseExceptionGroup):
                join_error = join_error.exceptions[0]
        if join_failed:
            nursery.cancel_scope.cancel()
        else:
            node = Node(runtime, runtime.tasks_in(nursery))
            try:
                yield node
            except BaseException as exc:  # re-raised below, outside the nursery's group
                body_error = exc
            finally:
                with trio.CancelScope(shield=True):
                    await node._shutdown()
                nursery.cancel_scope.cancel()
    if join_error is not None:
        raise join_error
    if join_failed:
        why = "; ".join(runtime.seed_problems.values())
        raise JoinError(f"could not join through {list(seeds)} within {join_timeout} s"
                        + (f" ({why})" if why else ""))
    if body_error is not None:
        raise body_error
