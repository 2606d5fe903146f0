"""The blocking face of iris, for scripts and threaded servers: the same API as the trio one,
with plain functions.

    with iris.sync.open_node(network_key=key, seeds=[...]) as node:      # blocks until joined
        node.register("echo", Echo())        # Echo.handle_request(data) -> bytes: a plain method
        reply = node.request("echo", b"hi", timeout=1.0)      # from any number of threads

    with iris.sync.RelayClient.open(55555) as client:                    # a node's relay
        reply = client.request("echo", b"hi", timeout=1.0)

How it works. There is one implementation of the protocol, the trio one; this module drives
it. `open_node` (or `RelayClient.open`) starts a thread of its own (not a daemon: leaving the
`with` block ends it) that runs `trio.run` and, in it, the trio `iris.open_node` (or the trio
`RelayClient.open`). Each blocking call hands its work to that thread with
`trio.from_thread.run(..., trio_token=...)` and waits for the outcome; the trio API's results
and errors come back as they are (`RemoteError`, `NoSuchClusterError`, `TimeoutError`,
`LimitExceededError`, `ClosedError`...). Handlers are plain functions: the trio side calls them
with `trio.to_thread.run_sync` on a pool of at most `handler_threads` threads (32 unless told;
one `trio.CapacityLimiter` per node or client), within the limits the trio API already keeps
(a service's `ServiceLimits.max_concurrency`, one event of a topic at a time and in order).
`_TrioThread` below is the whole of the machinery; the node and the relay client share it.

Why a thread. A blocking program has no event loop that the node could be a guest of (trio's
guest mode needs a host loop that calls back), and the node must keep running between the
program's calls: answer its peers' keep-alives, route their traffic, serve its handlers. So the
node gets a thread of its own and the program's threads talk to it.

What a hand-off costs, measured with a timing loop (2,000 calls, median of 5 runs) on the
development machine (2 cores, shared with other work; Python 3.11, trio 0.35): a call through
`_TrioThread.call` of an async function that returns at once, about 50 us (a system task in the
trio thread, and both threads woken); `call_sync` (used by `status`), about 35 us. A request
between two nodes of this API on loopback TCP, answered by a plain-function handler, took
about 460 us; with an async handler in the member (no worker thread) about 310 us; two trio
nodes in one trio thread, about 190 us. So the caller's side (its hand-off, and the nodes'
two threads) costs about a quarter of a request, the handler's worker thread
(`trio.to_thread.run_sync`) about a third. Each node (and each relay client) has its own
thread and `trio.run`: its lifetime is its `with` block, and nothing is shared between them.

Closing. Leaving the `with` block marks the node closed (new calls raise `ClosedError`),
cancels the calls still waiting in other threads (they raise `ClosedError`, they never hang),
leaves the ring, ends the trio thread and joins it. Handlers still running in worker threads
are abandoned, not waited for: their later calls into the node raise `ClosedError`.

From the node's own thread (code run there through `Node.start_trio_task`) the blocking calls
raise RuntimeError: they would wait for the very thread they block (and from any other thread
that runs trio, which they would stall). Use the trio API there.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from typing import Any, Generic, Protocol, TypeVar

import trio

import iris.runtime.node as trio_node
from iris.core.limits import ServiceLimits, TopicLimits, check_payload
from iris.core.messages import MAX_SURVEY_BYTES
from iris.errors import ClosedError, IrisError, TimeoutError
from iris.relay import client as relay_client
from iris.runtime.survey import SurveyResult
from iris.runtime.transport import Address

__all__ = ["Node", "Registration", "RelayClient", "Tunnel", "open_node", "time_left"]

DEFAULT_HANDLER_THREADS = 32
log = logging.getLogger("iris.sync")
MAX_POSTED = 1024  # publishes queued for the trio thread before a publisher waits for it
T = TypeVar("T")
_Report = Callable[[tuple[T | None, BaseException | None]], None]  # what entering gave

# When the caller of the request a handler thread serves gives up (time.monotonic()): set by
# the trio side before it hands the request to the thread (which gets a copy of its context).
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("iris_sync_deadline")


def time_left() -> float:
    """Seconds until the caller of the request being handled gives up (in a `handle_request`
    of a node's handler; infinity elsewhere), as `iris.time_left` is for the trio API."""
    return max(0.0, _deadline.get(math.inf) - time.monotonic())


class _TrioThread(Generic[T]):
    """One `trio.run` in a thread of its own, holding one async context open (the trio node,
    or the trio relay client), and the hand-off of blocking calls to it."""

    def __init__(self, name: str, handler_threads: int) -> None:
        if handler_threads < 1:
            raise ValueError("handler_threads must be >= 1")
        self._name = name
        self.limiter = trio.CapacityLimiter(handler_threads)  # the handlers' worker threads
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None
        self._closed = False  # no new calls (set by any thread; read without the lock)
        self._lock = threading.Lock()
        self._error: BaseException | None = None  # the trio side failed with it
        # Trio-side state, touched only in the trio thread:
        self._stopping = False
        self._stop: trio.Event | None = None
        self._calls: set[trio.CancelScope] = set()  # blocking calls under way
        self._nursery: trio.Nursery | None = None  # tasks started with `start_task`
        # Plain calls posted without waiting (`post`), and whether a drain of them is queued:
        self._posted: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._draining = False
        self._feeds: dict[str, _EventFeed] = {}  # the subscriptions' handler threads
        self._answers: set[_Answer] = set()  # blocking callers waiting for a posted call

    # ---------------------------------------------------------------- caller's side
    def start(self, enter: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        """Start the thread, enter `enter()` in it, and return what it yields; what entering
        raises (JoinError...) is raised here, and the thread is gone."""
        entered: queue.SimpleQueue[tuple[T | None, BaseException | None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(enter, entered.put),
                                        name=self._name, daemon=False)
        self._thread.start()
        value, error = entered.get()
        if error is not None:
            self._closed = True
            self._thread.join()
            raise error
        return value  # type: ignore[return-value]  # (the context's value: None only if it is)

    def call(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`await afn(*args)` in the trio thread; its result or its error. ClosedError once
        closed, and for a call still waiting when it closes."""
        token = self._check()
        try:
            return trio.from_thread.run(self._guarded, afn, args, trio_token=token)
        except (trio.RunFinishedError, trio.Cancelled):  # the trio run ended meanwhile
            raise ClosedError(f"{self._name} closed") from None

    def call_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in the trio thread (it must not block); its result or its error."""
        token = self._check()
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=token)
        except trio.RunFinishedError:
            raise ClosedError(f"{self._name} closed") from None

    def feed(self, topic: str, handler: Callable[[bytes], Any]) -> _EventFeed:
        """A handler thread for `topic`'s events, in place of the topic's last one."""
        feed = _EventFeed(self, topic, handler)
        with self._lock:
            old, self._feeds[topic] = self._feeds.get(topic), feed
        if old is not None:
            old.stop()
        return feed

    def end_feed(self, topic: str) -> None:
        with self._lock:
            feed = self._feeds.pop(topic, None)
        if feed is not None:
            feed.stop()

    def answer(self) -> _Answer:
        """A blocking caller's wait for the outcome of a call it posts: it ends with
        ClosedError if the trio thread ends first."""
        answer = _Answer(self)
        with self._lock:
            if self._closed:
                raise ClosedError(f"{self._name} closed")
            self._answers.add(answer)
        return answer

    def forget(self, answer: _Answer) -> None:
        with self._lock:
            self._answers.discard(answer)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have the trio thread run the plain `fn(*args)` soon, without waiting for it (in
        order with the other posts and calls: they all go through trio's one entry queue).
        One wake of the trio thread serves every post made before it drains them."""
        token = self._check()
        self._posted.append((fn, args))
        if not self._draining:
            self._draining = True
            try:
                token.run_sync_soon(self._drain)
            except trio.RunFinishedError:
                raise ClosedError(f"{self._name} closed") from None

    @property
    def posted(self) -> int:
        """Posts the trio thread has not run yet."""
        return len(self._posted)

    def _drain(self) -> None:
        self._draining = False  # (first: a post racing this drain queues another)
        posted = self._posted
        while posted:
            fn, args = posted.popleft()
            try:
                fn(*args)
            except ClosedError:  # (closed since: as a publish made at the close)
                pass
            except Exception:  # a callback of trio's entry queue must not raise
                log.exception("a call posted to %s failed", self._name)

    def start_task(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`nursery.start(async_fn, *args)` in a nursery of the trio thread that lives until
        the close (its tasks are cancelled first); what the task passes to `started()`."""
        return self.call(self._start_task, async_fn, args)

    def close(self) -> None:
        """Refuse new calls, cancel those waiting, exit the context, end the thread. Raises
        what the trio side failed with, if anything."""
        self._not_in_trio_thread()
        with self._lock:
            closing, self._closed = not self._closed, True
        if closing and self._token is not None:
            with suppress(trio.RunFinishedError):  # (it ended of itself)
                trio.from_thread.run_sync(self._shut, trio_token=self._token)
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.stop()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _check(self) -> trio.lowlevel.TrioToken:
        self._not_in_trio_thread()
        if self._closed or self._token is None:
            raise ClosedError(f"{self._name} closed")
        return self._token

    def _not_in_trio_thread(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(
                f"a blocking iris.sync call from {self._name}'s own trio thread would wait for "
                "itself forever: use the trio API there")
        if trio.lowlevel.in_trio_run():  # (trio refuses it too, in fewer words)
            raise RuntimeError("a blocking iris.sync call from a thread that runs trio would "
                               "stall it: use the trio API there")

    # ------------------------------------------------------------------ trio side
    def _run(self, enter: Callable[[], AbstractAsyncContextManager[T]], report: _Report[T],
             ) -> None:
        reported = False

        def report_once(value: T | None, error: BaseException | None) -> None:
            nonlocal reported
            reported = True
            report((value, error))

        try:
            trio.run(self._main, enter, report_once)
        except BaseException as exc:  # given to the starter, or to whoever closes
            if reported:
                self._error = exc
            else:
                report((None, exc))
        else:
            if not reported:  # (cannot happen: the context yields or raises)
                report((None, RuntimeError(f"{self._name} ended before it started")))
        finally:
            with self._lock:
                self._closed = True
                answers, self._answers = self._answers, set()
            for answer in answers:  # (their calls were posted and never ran)
                answer(None, ClosedError(f"{self._name} closed"))

    async def _main(self, enter: Callable[[], AbstractAsyncContextManager[T]],
                    report: Callable[[T | None, BaseException | None], None]) -> None:
        self._stop = trio.Event()
        try:
            async with enter() as value, trio.open_nursery() as nursery:
                self._nursery = nursery
                self._token = trio.lowlevel.current_trio_token()
                report(value, None)
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._shut()  # (when the context ended of itself, the calls get ClosedError)

    def _shut(self) -> None:
        self._closed = self._stopping = True
        for scope in self._calls:
            scope.cancel()
        if self._stop is not None:
            self._stop.set()

    async def _guarded(self, afn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
        if self._stopping:  # handed over as the close began
            raise ClosedError(f"{self._name} closed")
        with trio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                return await afn(*args)
            finally:
                self._calls.discard(scope)
        raise ClosedError(f"{self._name} closed")  # cancelled by the close

    async def _start_task(self, async_fn: Callable[..., Awaitable[Any]],
                          args: tuple[Any, ...]) -> Any:
        assert self._nursery is not None
        return await self._nursery.start(async_fn, *args)


class _Answer:
    """What a blocking caller waits for: the outcome the trio thread reports (as the trio
    node's callbacks take it: a value, or an error)."""

    __slots__ = ("_thread", "_done", "_value", "_error")

    def __init__(self, thread: _TrioThread[Any]) -> None:
        self._thread = thread
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def __call__(self, value: Any, error: BaseException | None) -> None:
        if not self._done.is_set():
            self._value, self._error = value, error
            self._done.set()

    def wait(self) -> Any:
        self._done.wait()
        self._thread.forget(self)
        if self._error is not None:
            raise self._error
        return self._value


def _start_request(node: trio_node.Node, cluster: str, data: bytes, timeout: float,
                   answer: _Answer) -> None:
    """(in the trio thread) The node's plain-function request, its outcome to `answer`."""
    try:
        node.start_request(cluster, data, timeout, answer)
    except Exception as exc:  # (ValueError, LimitExceededError, ClosedError)
        answer(None, exc)


class _Handlers:
    """A blocking program's handler object, as the trio API wants it: each plain
    `handle_request`, `handle_broadcast`, `handle_survey` and `handle_tunnel` the object has
    becomes an async
    method that runs it on the worker threads (only those: the trio side looks for them)."""

    def __init__(self, thread: _TrioThread[Any], handler: Any) -> None:
        self._thread = thread
        self._handler = handler
        for name in ("handle_request", "handle_broadcast", "handle_survey", "handle_tunnel"):
            method = getattr(handler, name, None)
            if method is not None:
                _check_plain(method, f"{name} of {handler!r}")
                setattr(self, name, getattr(self, f"_{name}"))

    async def _handle_request(self, data: bytes) -> bytes:
        _deadline.set(time.monotonic() + trio_node.time_left())  # (the thread gets a copy)
        reply: bytes = await self._thread_run(_unless_expired, self._handler.handle_request, data)
        return reply

    async def _handle_broadcast(self, data: bytes) -> None:
        await self._thread_run(self._handler.handle_broadcast, data)

    async def _handle_survey(self, data: bytes) -> bytes:
        _deadline.set(time.monotonic() + trio_node.time_left())  # (the thread gets a copy)
        answer: bytes = await self._thread_run(_unless_expired, self._handler.handle_survey, data)
        return answer

    async def _handle_tunnel(self, tunnel: Any) -> None:
        await self._thread_run(self._handler.handle_tunnel, Tunnel(self._thread, tunnel))

    async def _thread_run(self, fn: Callable[..., Any], *args: Any) -> Any:
        # abandon_on_cancel: a handler that never returns must not keep the node from closing
        return await trio.to_thread.run_sync(fn, *args, limiter=self._thread.limiter,
                                             abandon_on_cancel=True)


def _unless_expired(handle_request: Callable[[bytes], bytes], data: bytes) -> bytes:
    """In the worker thread: a request that waited for a thread past its caller's patience
    is not run (as the trio node does with one that waited for a task)."""
    if time_left() <= 0:
        raise IrisError("request expired")
    return handle_request(data)


class _EventFeed:
    """One topic's plain-function handler, called in order, one event at a time, on a thread
    of the subscription's own. The node's side hands each event over through a queue without
    a round trip (a hand-off to a worker thread per event cost ~90 us of CPU, and under load
    the topic's limits then dropped most events), and waits once `QUEUE` events are queued;
    the topic's own limits apply behind it, as in the trio API. The handler's thread posts
    back what it has handled, one wake of the node's thread for many events."""

    QUEUE = 64

    def __init__(self, thread: _TrioThread[Any], topic: str,
                 handler: Callable[[bytes], Any]) -> None:
        _check_plain(handler, f"the event handler {handler!r}")
        self._thread = thread
        self._topic = topic
        self._handler = handler
        self._events: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        # Node's side (its trio thread only): events queued and not yet handled, and the
        # event it waits on when QUEUE are.
        self._queued = 0
        self._room: trio.Event | None = None
        self._worker = threading.Thread(target=self._consume, daemon=True,
                                        name=f"iris events {topic[:32]}")
        self._worker.start()

    async def accept(self, data: bytes) -> None:
        """(the node's side: the trio API's async event handler)"""
        self._events.put(data)
        self._queued += 1
        if self._queued >= self.QUEUE:
            room = self._room = trio.Event()
            await room.wait()

    def _handled(self, n: int) -> None:
        self._queued -= n
        if self._room is not None and self._queued <= self.QUEUE // 2:
            self._room.set()
            self._room = None

    def stop(self) -> None:
        """No more events: the thread ends once it has handled the ones queued."""
        self._events.put(None)

    def _consume(self) -> None:
        events, handled = self._events, 0
        while True:
            if handled and (handled >= self.QUEUE // 4 or events.empty()):
                with suppress(ClosedError):  # (the node is gone: nobody waits for room)
                    self._thread.post(self._handled, handled)
                handled = 0
            data = events.get()
            if data is None:
                return
            try:
                self._handler(data)
            except Exception:  # one bad event must not end the subscription
                log.exception("the event handler of topic %r raised", self._topic)
            handled += 1


def _check_plain(fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} is not callable")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"{what} is async: iris.sync takes plain functions (use the trio API, "
                        "or iris.aio, for async handlers)")


class _TrioTunnel(Protocol):
    """What `Tunnel` drives: `iris.Tunnel` and the relay client's `RelayTunnel` alike."""

    async def send(self, data: bytes) -> None: ...
    async def receive(self) -> bytes: ...
    async def close(self) -> None: ...


class Tunnel:
    """An ordered, reliable, flow-controlled stream of messages to one cluster member
    (`Node.tunnel`, `RelayClient.tunnel`, or a handler's `handle_tunnel`)."""

    def __init__(self, thread: _TrioThread[Any], tunnel: _TrioTunnel) -> None:
        self._thread = thread
        self._tunnel = tunnel

    def send(self, data: bytes) -> None:
        """Send one message; blocks while the tunnel's send buffer is full. LimitExceededError
        beyond the largest message, ClosedError once closed."""
        self._thread.call(self._tunnel.send, data)

    def receive(self, timeout: float | None = None) -> bytes:
        """The next message; `iris.TimeoutError` (a builtin TimeoutError too) when none came
        within `timeout` seconds (nothing is lost: a later call gets it); ClosedError once the
        peer closed and every message was read."""
        if timeout is None:
            data: bytes = self._thread.call(self._tunnel.receive)
            return data
        got: bytes | None = self._thread.call(_receive_within, self._tunnel, timeout)
        if got is None:
            raise TimeoutError(f"no tunnel message within {timeout} s")
        return got

    def close(self) -> None:
        """Close the tunnel (closing it again, or once the node closed, does nothing)."""
        with suppress(ClosedError):
            self._thread.call(self._tunnel.close)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def _receive_within(tunnel: _TrioTunnel, seconds: float) -> bytes | None:
    with trio.move_on_after(seconds):
        return await tunnel.receive()
    return None


class Registration:
    """Handle returned by `Node.register`; `unregister()` ends the membership."""

    def __init__(self, thread: _TrioThread[Any], registration: trio_node.Registration) -> None:
        self._thread = thread
        self._registration = registration
        self.cluster = registration.cluster

    def unregister(self) -> None:
        self._thread.call(self._registration.unregister)


class Node:
    """A running node, for blocking code; obtain one with `open_node`. Every method may be
    called from any number of threads at once."""

    def __init__(self, thread: _TrioThread[trio_node.Node], node: trio_node.Node) -> None:
        self._thread = thread
        self._node = node
        self.id: int = node.id
        self.address: Address = node.address

    def status(self) -> dict[str, Any]:
        """A snapshot of the node's view: id, peers, leaf set, table fill, groups, counters."""
        status: dict[str, Any] = self._thread.call_sync(self._node.status)
        return status

    def register(self, cluster: str, handler: Any,
                 limits: ServiceLimits | None = None) -> Registration:
        """Join `cluster`, served by `handler`: an object with some of the plain methods
        `handle_request(bytes) -> bytes`, `handle_broadcast(bytes)`, `handle_survey(bytes) ->
        bytes` and `handle_tunnel(Tunnel)`,
        called on the node's worker threads (a `handle_tunnel` holds one for as long as it
        runs). Returns once requests sent afterwards can reach this member. An exception in
        `handle_request` reaches the caller as RemoteError; `time_left()` in it tells how long
        the caller still waits."""
        adapted = _Handlers(self._thread, handler)
        registration = self._thread.call(self._node.register, cluster, adapted, limits)
        return Registration(self._thread, registration)

    def request(self, cluster: str, data: bytes, timeout: float = 5.0) -> bytes:
        """Ask one member of `cluster`: its reply, or RemoteError, NoSuchClusterError,
        LimitExceededError or TimeoutError."""
        # Posted, not run in a trio task of its own: the node's thread is woken once for
        # all the threads' requests made before it gets to them, and answers each directly.
        if self._node.congested:
            self._thread.call(self._node.wait_for_room)
        answer = self._thread.answer()
        try:
            self._thread.post(_start_request, self._node, cluster, data, timeout, answer)
        except ClosedError:
            self._thread.forget(answer)
            raise
        reply: bytes = answer.wait()
        return reply

    def broadcast(self, cluster: str, data: bytes) -> None:
        """Send `data` to every member of `cluster`."""
        self._thread.call(self._node.broadcast, cluster, data)

    def survey(self, cluster: str, data: bytes, timeout: float = 5.0,
               max_bytes: int = MAX_SURVEY_BYTES) -> SurveyResult:
        """Ask every member of `cluster` (their plain `handle_survey(bytes) -> bytes`): the
        answers that came in time and how many members the tree knew of (as the trio API)."""
        result: SurveyResult = self._thread.call(self._node.survey, cluster, data, timeout,
                                                 max_bytes)
        return result

    def subscribe(self, topic: str, handler: Callable[[bytes], Any],
                  limits: TopicLimits | None = None) -> None:
        """Call `handler(event)` (a plain function, on a thread of the subscription's own)
        with each event of `topic`, one at a time, in order; returns once publishes sent
        afterwards reach us."""
        feed = self._thread.feed(topic, handler)
        self._thread.call(self._node.subscribe, topic, feed.accept, limits)

    def unsubscribe(self, topic: str) -> None:
        self._thread.call(self._node.unsubscribe, topic)
        self._thread.end_feed(topic)

    def publish(self, topic: str, data: bytes) -> None:
        """Send `data` to every subscriber of `topic`. Returns once it is queued for the node's
        thread (no round trip to it per event); waits while the node's links are congested or
        `MAX_POSTED` events wait for the thread."""
        check_payload(data)
        node, thread = self._node, self._thread
        if node.congested or thread.posted >= MAX_POSTED:
            thread.call(node.wait_for_room)  # (runs after every event posted before it)
        thread.post(node.start_publish, topic, data)

    def tunnel(self, cluster: str, timeout: float = 5.0) -> Tunnel:
        """Open a tunnel to one member of `cluster` (TimeoutError, NoSuchClusterError... as
        the trio API gives them)."""
        tunnel = self._thread.call(self._node.tunnel, cluster, timeout)
        return Tunnel(self._thread, tunnel)

    def start_trio_task(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """A hook for trio integrations that must run in the node's own thread (a relay
        server): `nursery.start(async_fn, trio_node, *args)` there, with the trio `iris.Node`
        as the first argument; returns what the task passes to `task_status.started()`. The
        task is cancelled when the node closes, before the node leaves the ring.

            async def relay(trio_node, task_status=trio.TASK_STATUS_IGNORED):
                await RelayServer(trio_node).serve(0, task_status=task_status)
            port = node.start_trio_task(relay)
        """
        return self._thread.start_task(async_fn, self._node, *args)


@contextmanager
def open_node(network_key: bytes, listen: str | Address = "127.0.0.1:0",
              seeds: list[str | Address] | tuple[str | Address, ...] = (),
              join_timeout: float = 30.0, *, handler_threads: int = DEFAULT_HANDLER_THREADS,
              **options: Any) -> Iterator[Node]:
    """Start a node in a thread of its own, join the ring (or found one when there are no
    seeds) and yield it once joined (JoinError otherwise). `options` are the other keyword
    options of `iris.open_node` (`overlay_config`, `messaging_config`, `busy_poll_s`...);
    `handler_threads` bounds the threads that run this node's handlers. Leaving the block
    leaves the ring gracefully, ends the thread, and makes the calls still waiting in other
    threads raise ClosedError."""
    thread: _TrioThread[trio_node.Node] = _TrioThread("iris node", handler_threads)
    started = thread.start(functools.partial(
        trio_node.open_node, network_key, listen, seeds, join_timeout, **options))
    try:
        yield Node(thread, started)
    finally:
        thread.close()


class RelayClient:
    """A client of a running node's relay (`iris node`), for blocking code: the trio
    `iris.relay.client.RelayClient` in a thread of its own. Obtain one with `open`; every
    method may be called from any number of threads at once."""

    def __init__(self, thread: _TrioThread[relay_client.RelayClient],
                 client: relay_client.RelayClient) -> None:
        self._thread = thread
        self._client = client

    @classmethod
    @contextmanager
    def open(cls, port: int = 55555, cluster: str = "", handler: Any = None,
             host: str = "127.0.0.1", max_concurrency: int = 64, *,
             handler_threads: int = DEFAULT_HANDLER_THREADS) -> Iterator[RelayClient]:
        """Connect to a node's relay; with `cluster`, as a member of it served by `handler`
        (plain `handle_request(bytes) -> bytes`, `handle_broadcast(bytes)`,
        `handle_tunnel(Tunnel)`, on at most `handler_threads` threads). Leaving the block
        closes the connection; calls still waiting in other threads raise ClosedError."""
        thread: _TrioThread[relay_client.RelayClient] = _TrioThread(
            "iris relay client", handler_threads)
        adapted = None if handler is None else _Handlers(thread, handler)

        def enter() -> AbstractAsyncContextManager[relay_client.RelayClient]:
            return relay_client.RelayClient.open(port, cluster, adapted, host, max_concurrency)

        client = thread.start(enter)
        try:
            yield cls(thread, client)
        finally:
            thread.close()

    def request(self, cluster: str, data: bytes, timeout: float = 5.0) -> bytes:
        """Ask one member of `cluster`; RemoteError, TimeoutError or ClosedError otherwise
        (LimitExceededError, before anything is sent, for more than the overlay carries)."""
        reply: bytes = self._thread.call(self._client.request, cluster, data, timeout)
        return reply

    def broadcast(self, cluster: str, data: bytes) -> None:
        self._thread.call(self._client.broadcast, cluster, data)

    def publish(self, topic: str, data: bytes) -> None:
        self._thread.call(self._client.publish, topic, data)

    def subscribe(self, topic: str, handler: Callable[[bytes], Any]) -> None:
        """Call `handler(event)` (a plain function, on a thread of the subscription's own)
        with each event of `topic`, one at a time, in order."""
        feed = self._thread.feed(topic, handler)
        self._thread.call(self._client.subscribe, topic, feed.accept)

    def unsubscribe(self, topic: str) -> None:
        self._thread.call(self._client.unsubscribe, topic)
        self._thread.end_feed(topic)

    def tunnel(self, cluster: str, timeout: float = 5.0) -> Tunnel:
        """Open a tunnel to one member of `cluster` (never one on this client's own node)."""
        tunnel = self._thread.call(self._client.tunnel, cluster, timeout)
        return Tunnel(self._thread, tunnel)

    def status(self) -> dict[str, Any]:
        """The node's own view: id, peers, leaf set, table fill, clusters, topics, counters."""
        status: dict[str, Any] = self._thread.call(self._client.status)
        return status

    def wait_closed(self) -> str:
        """Block until the connection ended (the node closed it, or it was lost); the reason."""
        reason: str = self._thread.call(self._client.wait_closed)
        return reason
