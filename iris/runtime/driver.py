"""The trio driver: one `OverlayNode` + `MessagingCore` over real TCP links.

Like the simulator, it only moves bytes and time: every input (a frame, a due timer, an
application call) goes into the cores, then `_after()` sends what they produced, hands their
events to the application layer and re-arms the one timer. No protocol decision lives here:
what the protocol decides about links, the driver asks `overlay.link_policy`.

Links: one TCP connection per peer, dialed on first use (the address comes from the directory)
or accepted. Each starts with the handshake of `overlay.link`; until it checks out nothing else
passes. Outgoing frames wait in the link's `OutQueue`, control frames (the link policy says
which) ahead of bulk, and one writer task coalesces what is queued into a single `send_all`.
Node ids become addresses through `Addresses` frames: before a frame that names nodes, the
sender tells the receiver where those nodes listen (once per link).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import secrets
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import trio

from iris.core import MessagingConfig, MessagingCore
from iris.core.events import Event
from iris.errors import JoinError
from iris.runtime.accept import link_share
from iris.runtime.backpressure import Backpressure
from iris.runtime.busy_poll import BusyPoll
from iris.runtime.eager_io import EagerReader, write_now
from iris.runtime.freezes import FreezeWatch
from iris.runtime.idle_links import SWEEP_S, idle_links
from iris.runtime.log_limit import LogLimit
from iris.runtime.out_queue import OutQueue
from iris.runtime.pause import Pause, Spawner
from iris.runtime.publish_batch import PublishBatch
from iris.runtime.transport import (
    Address,
    MemoryTransport,
    TcpTransport,
    abort_on_close,
    stalled,
    tune,
)
from overlay.config import OverlayConfig
from overlay.link import MAX_RECORD, FrameReader, Handshake, LinkError, LinkHello, Session, frame
from overlay.link_policy import CONTROL, LinkPolicy
from overlay.messages import MAX_ACKS, Addresses, Leave, LinkClose, RouteAck
from overlay.node import OverlayNode
from overlay.transit import TransitDelay, clock_field
from overlay.wire import DecodeError, Message, decode, encode, ids_in

log = logging.getLogger("iris.runtime.driver")

HANDSHAKE_TIMEOUT_S = 5.0
BATCH_BYTES = 64 * 1024  # what the writer task seals per send_all
EAGER_BYTES = 256 * 1024  # the most one eager write seals
BURST_BYTES = 64 * 1024  # a burst's frames are written at once when this much has piled up
READ_BYTES = 64 * 1024  # the most one read of a link takes
THAW_READ_S = 0.1  # after a freeze, the links' readers go first for this long
STALL_CHECK_S = 1.0  # how often writes under way are checked against the link policy's bound
MAX_CONTROL_FRAMES = 10_000  # per link
MAX_BULK_BYTES = 64 * 1024 * 1024  # per link
TOLD_LIMIT = 8192
DIRECTORY_LIMIT = 65_536  # known node addresses; beyond, the oldest unlinked ones go
INF = float("inf")


SETUP_ERRORS = (OSError, LinkError, trio.TooSlowError, trio.BrokenResourceError)
"""How dialling a peer and the handshake fail (a peer that resets the connection while we
write the handshake raises BrokenResourceError): the link is dropped, the node carries on."""


class PeerRefused(LinkError):
    """The address we dialled answered the handshake in a way no node of this network does:
    another network key, bytes that are not the handshake, or (`give_up_after` times in a
    row, as a node in trouble may do it once) a close or silence before its first frame. A
    seed that does so is dropped from the join (see `Runtime._reach_seeds`). The message
    describes the peer: "uses a different network key"."""

    def __init__(self, message: str, give_up_after: int = 1) -> None:
        super().__init__(message)
        self.give_up_after = give_up_after


def _nothing() -> None:
    """A call into the cores that only lets the queued publishes leave (`Runtime.call`)."""


def _outside_trio() -> bool:
    """Running outside every trio task (in a callback of trio's guest-mode host loop)?"""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return True
    return False


def _sent(received: bytes) -> str:
    """What a foreign peer sent, for the operator: its first bytes."""
    return f"it sent {bytes(received[:40])!r}{'...' if len(received) > 40 else ''}"


class Link:
    """One authenticated connection to a peer, with its outgoing queue: control frames in the
    priority lane (up to MAX_CONTROL_FRAMES), bulk in the main lane (up to MAX_BULK_BYTES,
    counted by the runtime's backpressure).

    Writes are eager, as the relay's (`iris.runtime.eager_io`): once the cores' output of one
    input is queued (`Runtime._after`), `flush` seals it and hands it to the kernel with one
    `os.write`, without waking a writer task or passing trio's loop. The writer task only
    writes what cannot go at once:
    - what the kernel did not take (`pending`, sealed already), and anything queued behind it;
    - frames queued while no frame but acknowledgements is waiting (`urgent` is False): the
      writer lets the ready tasks run first, so a request handler already woken adds its reply
      and both leave in one segment (one wake-up fewer at the peer per request);
    - the frames of a burst: after an eager write, until the peer's next bytes are read or
      the writer task has run, frames wait for the writer, which runs once the task making
      them yields (one write for a burst of publishes, or for 16 callers' next requests),
      unless BURST_BYTES have piled up (the peer gets a long burst in pieces, and works on
      it meanwhile).
    Streams without a socket (the memory network) are written by the writer task only."""

    def __init__(self, peer: int, pressure: Backpressure,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.peer = peer
        self.clock = clock  # trio's time (`Runtime.clock`)
        self.stream: trio.abc.Stream | None = None
        self.session: Session | None = None
        self.socket: Any = None  # the stream's socket object (never a kept fd number)
        self.queue = OutQueue(MAX_BULK_BYTES, MAX_CONTROL_FRAMES, pressure)
        self.wakeup = trio.Event()  # something for the writer task to write
        self.pending = b""  # sealed bytes an eager write left: the writer task sends them
        self.retry_at = 0  # ... unless the queue reaches this many bytes before it runs
        self.writing = False  # the writer task is writing: it also writes what comes next
        self.urgent = False  # a frame other than an acknowledgement was queued since the flush
        self.dirty = False  # in the runtime's list of links to flush
        self.burst = False  # an eager write was made since the peer's last bytes were read
        self.reading: trio.CancelScope | None = None  # the reader's, once the stream is open
        self.read_at = trio.current_time()  # when its frames were last delivered
        self.writing_since: float | None = None  # a write under way since then
        self.told: set[int] = set()  # ids whose addresses this peer has been given
        self._emptied: trio.Event | None = None  # set when the queue empties, if waited for
        # Closing when idle (iris.runtime.idle_links, overlay.link_policy):
        self.used = False  # a frame was queued since the last look
        self.active_at = self.read_at  # when one was last seen queued
        self.closing = False  # our LinkClose is queued: nothing more is written here
        self.peer_closed = False  # the peer's LinkClose was read: nothing more comes
        self.peer_left = False  # the peer's Leave was read: its connection ends next
        self.close_by = INF  # ... or the connection is closed anyway then
        self.eof_sent = False  # ... and then ours was written, and the write side shut
        self.ended = trio.Event()  # the reader has ended (the stream is closed)
        self.transit = TransitDelay()  # how late the peer's records arrive (overlay.transit)

    @property
    def closed(self) -> bool:
        return self.queue.closed

    @property
    def closable(self) -> bool:
        """Open, with nothing queued or being written, and not closing already."""
        return not (self.closing or self.peer_closed or self.queue or self.pending
                    or self.writing or self.closed)

    def flush(self) -> None:
        """Write what is queued now if the kernel takes it (see the class); or leave it to
        the writer task."""
        self.dirty = False
        if self.writing:
            return
        queue = self.queue
        if self.pending:
            # The kernel took part of the last write: try again each time another
            # BURST_BYTES are queued (a task that keeps queueing without yielding never lets
            # the writer task run; the peer would go idle once it read what the kernel had).
            if queue.queued_bytes < self.retry_at:
                return
        elif not queue:
            return
        elif (self.socket is None or self.session is None or not self.urgent
              or (self.burst and queue.queued_bytes < BURST_BYTES)):
            self.wakeup.set()  # the writer task's turn: see the class
            return
        self._write_now()

    def _write_now(self) -> None:
        assert self.session is not None
        queue = self.queue
        self.urgent = False
        taken = queue.take(EAGER_BYTES)
        data = self.session.seal_batch(taken, clock_field(self.clock())) if taken else b""
        if self.pending:
            data = self.pending + data
        written = write_now(self.socket, data)
        self.burst = True
        if written < len(data):
            self.pending = data[written:]
            self.retry_at = queue.queued_bytes + BURST_BYTES
            if written or self.writing_since is None:
                self.writing_since = self.clock()
            self.wakeup.set()
        else:
            self.pending = b""
            self.writing_since = None
            queue.written()
            if queue:
                self.wakeup.set()

    async def flushed(self) -> None:
        """Return once the writer has written everything queued, or the link closed."""
        if (self.queue or self.pending or self.writing) and not self.closed:
            self._emptied = trio.Event()
            await self._emptied.wait()

    def emptied(self) -> None:
        """The writer wrote everything queued, or the link closed: `flushed` returns."""
        if self._emptied is not None:
            self._emptied.set()


class OpenedStream(NamedTuple):
    """A stream whose handshake checked out, with what came after the handshake in its reads
    (`leftover` frames, and the `reader` holding the start of the next one)."""

    stream: trio.abc.Stream
    peer: LinkHello
    session: Session
    leftover: list[bytes]
    reader: FrameReader


class Runtime:
    def __init__(
        self,
        network_key: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        overlay_config: OverlayConfig | None = None,
        messaging_config: MessagingConfig | None = None,
        node_id: int | None = None,
        transport: TcpTransport | MemoryTransport | None = None,
        busy_poll: BusyPoll | None = None,
        link_policy: LinkPolicy | None = None,
    ) -> None:
        self.network_key = network_key
        self.transport = transport or TcpTransport()
        self.busy_poll = busy_poll or BusyPoll()
        self.host = host
        self.port = port
        self.node_id = node_id if node_id is not None else secrets.randbits(128)
        self.rng = random.Random(secrets.randbits(64))
        self.node = OverlayNode(self.node_id, self.rng, overlay_config)
        self.node.failed = []  # peers whose connections the link policy closes
        self.node.given_up = []  # ... and peers whose connections it may reset
        self.core = MessagingCore(self.node, messaging_config)
        self.directory: dict[int, Address] = {}
        self.links: dict[int, Link] = {}
        self.link_policy = link_policy or LinkPolicy()
        self.link_policy.max_links = link_share(self.link_policy.max_links)
        self.backpressure = Backpressure()
        self.publishes = PublishBatch(lambda: self.call(_nothing))
        self.freezes = FreezeWatch(self._frozen)
        self._warnings = LogLimit(log)  # a peer can make these as often as it connects
        # A node in this process (on the memory network) can be paused by tests; a node on TCP
        # is a process of its own, which SIGSTOP pauses for real.
        self.pause = Pause() if isinstance(self.transport, MemoryTransport) else None
        self.on_events: Callable[[list[Event]], None] = lambda events: None
        # trio's time: the run's clock read directly (serve), without the two calls of
        # `trio.current_time` in front of it; inputs read it several times each.
        self.clock: Callable[[], float] = trio.current_time
        self.counters: dict[str, int] = {}
        self.joined = trio.Event()
        self.seed_problems: dict[Address, str] = {}  # why each seed failed last (join errors)
        self._nursery: trio.Nursery | None = None
        self._tasks: Spawner | None = None  # where the node's tasks start: see tasks_in
        self._epoch = 0.0
        self._timer_scope: trio.CancelScope | None = None
        self._armed = INF  # the node deadline the timer scope was last set to
        self._closing = False
        self._dirty: list[Link] = []  # links with frames queued since the last flush
        self._running: set[Link] = set()  # links whose reader runs (sent on or only read)
        # Set while an input's output is made when that input handed a request to a handler:
        # links holding only hop acknowledgements then wait for the handler (`release_acks`,
        # from the reply, or as the handler starts waiting: `iris.runtime.first_step`), so the
        # acknowledgements leave with the reply and the writer task is not woken for them.
        self.hold_acks = False
        self._held: list[Link] = []

    # ------------------------------------------------------------------------ lifecycle
    def now(self) -> float:
        return self.clock() - self._epoch

    def trio_time(self, core_time: float) -> float:
        """A time of the cores' clock on trio's."""
        return core_time + self._epoch

    def tasks_in(self, nursery: trio.Nursery) -> Spawner:
        """Where this node starts its tasks in `nursery`: through its pause, if it has one
        (every task of a paused node is held: see iris.runtime.pause)."""
        return nursery if self.pause is None else self.pause.holding(nursery)

    def _frozen(self, seconds: float) -> None:
        log.warning("this process was frozen for %.1f s: what arrived meanwhile counts as old",
                    seconds)
        self.count("freezes")

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    async def serve(self, seeds: list[Address], join_timeout: float,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, join through `seeds` (or found a ring), then run until cancelled."""
        self.clock = trio.lowlevel.current_clock().current_time
        self._epoch = self.clock()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            tasks = self._tasks = self.tasks_in(nursery)
            self.port = await self.transport.listen(tasks, self.host, self.port, self._accepted)
            tasks.start_soon(self._timer_loop)
            tasks.start_soon(self.busy_poll.run)
            tasks.start_soon(self.freezes.run)
            tasks.start_soon(self._watch_links)
            tasks.start_soon(self.publishes.run)
            with trio.fail_after(join_timeout):
                seed_ids = await self._reach_seeds(seeds) if seeds else []
                self.node.start(self.now(), seed_ids)
                self._after()
                await self.joined.wait()
            task_status.started()

    async def _reach_seeds(self, seeds: list[Address]) -> list[int]:
        """Dial the seeds until one answers, with a growing pause between rounds. A seed that
        is no node of this network (`PeerRefused`: another network key, not the iris
        protocol) is dropped at once, and once no seed is left JoinError says why: dialling
        it again cannot help. One that is not reachable (yet) is dialled again until the join
        times out; `seed_problems` keeps why, for that error."""
        pause = 0.2
        strikes: dict[Address, int] = {}  # PeerRefused in a row, per seed
        dropped: list[str] = []
        while True:
            reached = []
            for address in seeds:
                if strikes.get(address, 0) < 0:  # dropped
                    continue
                try:
                    reached.append(await self._dial_address(address))
                except PeerRefused as exc:
                    why = f"the seed at {address[0]}:{address[1]} {exc}"
                    self.seed_problems[address] = why
                    strikes[address] = strikes.get(address, 0) + 1
                    if strikes[address] < exc.give_up_after:
                        log.info("%s; trying again", why)
                    else:
                        strikes[address] = -1
                        dropped.append(why)
                        if len(dropped) < len(set(seeds)):  # (else the JoinError says it)
                            log.warning("%s; joining through the other seeds", why)
                except SETUP_ERRORS as exc:
                    strikes.pop(address, None)
                    why = str(exc) or type(exc).__name__
                    self.seed_problems[address] = f"the seed at {address[0]}:{address[1]}: {why}"
                    log.info("seed %s:%d not reachable: %s", *address, why)
            if reached:
                return reached
            if len(dropped) == len(set(seeds)):
                raise JoinError("; ".join(dropped))
            await trio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def leave(self) -> None:
        """Graceful departure: neighbours are told; the links then close."""
        if self._closing:
            return
        self._closing = True
        self.node.set_time(self.now())
        self._take_publishes()
        self.node.leave(self.now())
        self._after()

    def crash(self) -> None:
        """Stop at once, as a killed process does: no Leave, nothing flushed."""
        self._closing = True
        self._stop()

    async def close(self) -> None:
        """Flush what the leave produced (briefly), then stop every task."""
        with trio.move_on_after(1.0):
            for link in list(self.links.values()):
                await link.flushed()
        self._stop()

    def _stop(self) -> None:
        """Refuse connections and end every task: each link's reader closes its stream on
        the way out, so every peer sees its connection end."""
        close_listener = getattr(self.transport, "close_listener", None)
        if close_listener is not None:
            close_listener(self.host, self.port)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------- the one loop step
    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run an application call, `fn(*args)`, on the cores (with the clock set) and act on
        its output (the arguments spare the hot paths a lambda per call).
        A paused node's tasks make none; one from outside (a test's) is refused, as the
        application of a stopped process calls nothing."""
        self._check_running()
        self.node.set_time(self.now())
        try:
            if self.publishes.payloads:
                self._take_publishes()  # the earlier publishes leave first
            return fn(*args)
        finally:
            self._after()

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one event: it leaves in a batch (`iris.runtime.publish_batch`)."""
        self._check_running()
        self.publishes.add(topic, payload)

    def _check_running(self) -> None:
        if self.pause is not None and self.pause.paused:
            raise RuntimeError("the node is paused: it runs nothing until resumed")

    def _take_publishes(self) -> None:
        if self.publishes.payloads:
            self.core.publish_batch(*self.publishes.take())

    def _after(self) -> None:
        node = self.node
        self.busy_poll.worked = True
        if node.given_up:
            self._reset_given_up()
        while node.out:
            out, node.out = node.out, []
            acks: dict[int, list[int]] | None = None
            for dest, msg in out:
                if dest == self.node_id:
                    # e.g. the reply of a request this node both sent and served
                    node.receive(dest, msg, self.now())
                elif type(msg) is RouteAck:
                    # The acknowledgements of a batch of frames from one peer go back as
                    # one message: a frame less per request under load.
                    if acks is None:
                        acks = {}
                    acks.setdefault(dest, []).extend(msg.seqs)
                else:
                    self._send(dest, msg)
            if acks:
                for dest, seqs in acks.items():
                    for i in range(0, len(seqs), MAX_ACKS):
                        self._send(dest, RouteAck(tuple(seqs[i:i + MAX_ACKS])), urgent=False)
        if node.failed:
            failed, node.failed = node.failed, []
            for peer in failed:
                link = self.links.get(peer)
                if link is not None and self.link_policy.close_when_gone(peer):
                    self._close_link(link, "links_closed_peer_gone")
        while self.core.events:  # handling events may cause more (a drained queue)
            events, self.core.events = self.core.events, []
            self.on_events(events)
        if not self.joined.is_set() and node.active:
            self.joined.set()
        hold, self.hold_acks = self.hold_acks, False
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for link in dirty:
                if hold and not link.urgent and not link.pending:
                    link.dirty = False  # (what is queued next is flushed as ever)
                    self._held.append(link)  # see hold_acks
                else:
                    link.flush()
        scope = self._timer_scope
        if scope is not None and node.next_deadline != self._armed:
            # Moving the sleeping timer task's deadline does not wake it: no task switch per
            # hop timer armed or request sent. Most inputs leave the deadline as it was, and
            # then not even the move (a re-sort of trio's deadline table) is needed.
            earlier = node.next_deadline < self._armed
            self._armed = node.next_deadline
            scope.deadline = self._epoch + self._armed
            if earlier and _outside_trio():
                # A call from the host loop of trio's guest mode (`iris.aio`) runs while trio
                # waits for I/O in its thread, with a timeout from the old deadline: wake it.
                trio.lowlevel.current_trio_token().run_sync_soon(_nothing)

    def _reset_given_up(self) -> None:
        """Reset the links that may still hold a hop the overlay gave up (`LinkPolicy.
        reset_when_given_up`): before the output of the same input is queued, so that a frame
        it writes to such a peer (a probe) goes on a fresh connection, not into the backlog
        the reset discards."""
        given_up, self.node.given_up = self.node.given_up or [], []
        for peer in given_up:
            link = self.links.get(peer)
            if link is not None and self.link_policy.reset_when_given_up(self._stalled(link)):
                abort_on_close(link.socket)
                self._close_link(link, "links_reset_stalled_hop")

    @staticmethod
    def _stalled(link: Link) -> bool:
        """Whether `link` holds frames its peer has not taken: queued here (or waiting for the
        dial), or written and left unacknowledged in the kernel (`transport.stalled`)."""
        return bool(link.queue or link.pending) or stalled(link.socket)

    def release_acks(self) -> None:
        """The handler replied or waits: the held links go (if its reply was written with
        their acknowledgements, nothing is left to write)."""
        held, self._held = self._held, []
        for link in held:
            link.flush()

    async def _timer_loop(self) -> None:
        while True:
            self._armed = self.node.next_deadline
            with trio.CancelScope(deadline=self._epoch + self._armed) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            if self.freezes.thawing(trio.current_time()):
                # What piled up while frozen is read before the overdue timers run, as it
                # arrived before they were due: heartbeats in it keep live peers from being
                # suspected, and the ends of connections peers closed meanwhile are seen
                # before a beat is written into one and lost.
                await trio.sleep(THAW_READ_S)
            now = self.now()
            if self.node.next_deadline <= now:
                self.node.handle_timer(now)
                self._after()

    # ---------------------------------------------------------------------------- sending
    def _send(self, dest: int, msg: Message, urgent: bool = True) -> None:
        link = self.links.get(dest)
        if link is None:
            address = self.directory.get(dest)
            if address is None or self._tasks is None:
                self.count("sent_to_unknown_address")
                return
            link = self.links[dest] = Link(dest, self.backpressure, self.clock)
            self._tasks.start_soon(self._dial, link, address)
        told, directory = link.told, self.directory
        entries = None
        for node_id in ids_in(msg):
            if node_id not in told and node_id != dest:
                address = directory.get(node_id)
                if address is not None:
                    if entries is None:
                        entries = []
                    entries.append((node_id, address[0], address[1]))
                    told.add(node_id)
        policy = self.link_policy
        if entries:
            if len(told) > TOLD_LIMIT:
                told.clear()
            addresses = Addresses(tuple(entries[:256]))
            link.queue.push(encode(addresses), policy.priority(addresses) is CONTROL)
        if not link.queue.push(encode(msg), policy.priority(msg) is CONTROL):
            self.count("send_queue_full")
            return
        link.used = True
        if urgent:
            link.urgent = True
        if not link.dirty:
            link.dirty = True
            self._dirty.append(link)

    async def _writer(self, link: Link) -> None:
        stream, session, queue = link.stream, link.session, link.queue
        assert stream is not None and session is not None
        seal_batch = session.seal_batch
        while not queue.closed:
            await link.wakeup.wait()
            if queue and not link.urgent:
                # Only acknowledgements wait: let the tasks that are ready run first, so a
                # request handler already woken adds its reply to them and both leave in one
                # segment (one wake-up fewer at the peer per request).
                await trio.lowlevel.cancel_shielded_checkpoint()
            link.wakeup = trio.Event()
            link.writing = True
            try:
                while link.pending or queue:
                    if link.pending:  # the rest of an eager write: it goes first
                        data, link.pending = link.pending, b""
                    else:
                        link.urgent = False
                        now = link.writing_since = link.clock()
                        data = seal_batch(queue.take(BATCH_BYTES), clock_field(now))
                    # (no pass of trio's loop when the kernel takes it all, as it almost always
                    # does)
                    written = write_now(link.socket, data)
                    if written < len(data):
                        await stream.send_all(data[written:] if written else data)
                    link.writing_since = None
                    queue.written()
            finally:
                link.writing = False
            link.burst = False
            link.emptied()

    async def _watch_links(self) -> None:
        """Close the links whose write the connection has not taken for the policy's
        `stall_s` (one check a second for all links: a timer around each write cost ~10% of
        the sequential request rate, measured), the ones whose peer did not answer our
        `LinkClose` in time, and (every `SWEEP_S`) begin closing the idle ones."""
        next_sweep = trio.current_time() + SWEEP_S
        while True:
            await trio.sleep(STALL_CHECK_S)
            now, stall_s = trio.current_time(), self.link_policy.stall_s
            for link in list(self._running):
                since = link.writing_since
                if since is not None and now - since > stall_s:
                    self._close_link(link, "links_closed_stalled")
                elif link.close_by < now and not link.ended.is_set():
                    self._close_link(link, "links_closed_unanswered")
            if now >= next_sweep:
                next_sweep = now + SWEEP_S
                self.close_idle(now)

    def close_idle(self, now: float) -> None:
        """Begin closing the links `idle_links` picks: our `LinkClose` is their last frame."""
        open_links = [link for link in self._running if not (link.closing or link.peer_closed)]
        for link in idle_links(open_links, now, self.link_policy, len(open_links)):
            self.count("links_closed_idle")
            self._say_close(link)

    def _say_close(self, link: Link) -> None:
        """Queue our `LinkClose` as the link's last frame and stop sending on it: the next
        frame for the peer goes over a connection dialled once this one has ended."""
        link.closing = True
        link.close_by = trio.current_time() + self.link_policy.close_wait_s
        if self.links.get(link.peer) is link:
            del self.links[link.peer]
        if link.queue.push(encode(LinkClose()), False):
            link.urgent = True
            link.flush()
        else:  # no room for it behind the frames queued: the connection simply ends
            self._close_link(link, "links_closed_queue_full")

    # --------------------------------------------------------------------------- links
    async def _connect(self, address: Address) -> OpenedStream:
        """Dial `address` and run the handshake; the stream is closed if that fails."""
        try:
            with trio.fail_after(self.link_policy.dial_timeout_s):
                stream = await self.transport.connect(*address)
        except OSError as exc:
            if _reset_as_accepted(exc):
                # A service that accepts and resets at once (its reset may come before the
                # connect returns): refused like one that closes without a word, not dialled
                # again as unreachable until a join times out.
                raise PeerRefused("reset the connection as soon as it accepted it (is it an "
                                  "iris node?)", give_up_after=3) from None
            raise
        tune(stream, self.link_policy)
        try:
            return await self._handshake(stream, dialer=True)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def _dial_address(self, address: Address) -> int:
        """Connect to a seed by address; returns its id once the handshake checks out."""
        opened = await self._connect(address)
        link = self._link_for_new_stream(opened.peer.node_id)
        self._adopt(link, opened, address)
        assert self._tasks is not None
        self._tasks.start_soon(self._run_link, link, opened.reader, opened.leftover)
        return opened.peer.node_id

    def _link_for_new_stream(self, peer: int) -> Link:
        """Every stream gets its own Link and reader. The one registered for sending stays
        until it closes, so a peer's frames never switch streams mid-flow (order holds);
        a second stream (both sides dialed at once) is only read from."""
        link = Link(peer, self.backpressure, self.clock)
        current = self.links.get(peer)
        if (current is None or current.closed) and not any(
                other.peer == peer and other.closing for other in self._running):
            self.links[peer] = link
        return link

    async def _dial(self, link: Link, address: Address) -> None:
        """Connect `link`'s stream, once every link to the peer that is closing has ended:
        the peer has then read all we wrote there, so what we write here comes after it."""
        for old in [other for other in self._running if other.peer == link.peer
                    and other.closing]:
            await old.ended.wait()  # (bounded: see `close_by`)
        if link.closed:  # dropped meanwhile (its peer declared failed): nothing to dial for
            return
        try:
            opened = await self._connect(address)
        except SETUP_ERRORS as exc:
            log.info("link to %s:%d failed: %s", *address, exc)
            self._drop_link(link)
            return
        peer_id = opened.peer.node_id
        if peer_id != link.peer:
            log.info("%s:%d is now node %x, not %x", *address, peer_id, link.peer)
            self.directory.pop(link.peer, None)
            self._drop_link(link)
            link = self._link_for_new_stream(peer_id)
        self._adopt(link, opened, address)
        self.node.link_up(peer_id, self.now())  # the hops queued for it leave now
        await self._run_link(link, opened.reader, opened.leftover)

    async def _accepted(self, stream: trio.abc.Stream) -> None:
        tune(stream, self.link_policy)
        try:
            opened = await self._handshake(stream, dialer=False)
        except SETUP_ERRORS as exc:
            self._warnings.warning("link_refused", "incoming link refused: %s", exc)
            await trio.aclose_forcefully(stream)
            return
        peer = opened.peer
        host = peer.host
        if host in ("0.0.0.0", "::", "") and isinstance(stream, trio.SocketStream):
            host = stream.socket.getpeername()[0]
        link = self._link_for_new_stream(peer.node_id)
        self._adopt(link, opened, (host, peer.port))
        # serve_listeners closes the stream on return
        await self._run_link(link, opened.reader, opened.leftover)

    async def _handshake(self, stream: trio.abc.Stream, dialer: bool) -> OpenedStream:
        hs = Handshake(self.network_key, self.node_id, self.host, self.port, dialer)
        reader = FrameReader(max_frame=4096)
        leftover: list[bytes] = []
        received = b""  # the start of what the peer sent, to say what a foreign one did
        proof = False
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                await stream.send_all(frame(hs.hello()))
                while hs.session is None:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise LinkError("peer closed during the handshake")
                    if len(received) < 64:
                        received += bytes(data[:64])
                    for payload in reader.feed(bytes(data)):
                        if hs.session is not None:
                            leftover.append(payload)
                            continue
                        proof = hs.peer is not None  # after the hello: the peer's proof
                        reply = hs.receive(payload)
                        if reply is not None:
                            await stream.send_all(frame(reply))
        except (LinkError, trio.BrokenResourceError) as exc:
            # (A reset is a close too: a server that closes without reading what we sent
            # resets the connection instead, as it happens. Taken for an unreachable seed, it
            # was dialled again until the join timed out, one run of the suite in about eight.)
            if not dialer:
                raise
            if proof:  # its hello checked out, its proof of the network key did not
                raise PeerRefused("uses a different network key") from None
            raise _refusal(exc, received, hs.peer is not None) from None
        except trio.TooSlowError as exc:
            if not dialer:
                raise
            raise _refusal(exc, received, hs.peer is not None) from None
        assert hs.peer is not None  # known before the session is
        if hs.peer.node_id == self.node_id:
            if dialer:
                raise PeerRefused("is this node itself")
            raise LinkError("connected to ourselves")
        reader.max_frame = MAX_RECORD
        return OpenedStream(stream, hs.peer, hs.session, leftover, reader)

    def _adopt(self, link: Link, opened: OpenedStream, address: Address) -> None:
        link.stream = opened.stream
        link.session = opened.session
        link.socket = getattr(opened.stream, "socket", None)
        self.directory[link.peer] = address
        link.wakeup.set()

    async def _run_link(self, link: Link, reader: FrameReader, leftover: list[bytes]) -> None:
        """Read frames until the peer closes or breaks the protocol; then drop the link.
        Once both sides have said `LinkClose` and ours is written, the write side is shut;
        the peer does the same, and its end of the stream ends the link."""
        assert self._tasks is not None and link.stream is not None
        self._tasks.start_soon(self._write_loop, link)
        self._running.add(link)
        ended = False  # the stream ended under us (EOF, a reset), not by our cancel
        try:
            incoming = EagerReader(link.stream, READ_BYTES)
            with trio.CancelScope() as link.reading:
                self._deliver_all(link, leftover)
                while not link.closed:
                    if link.peer_closed and not link.eof_sent:
                        await self._shut_writing(link)
                    data = await incoming.receive()
                    if not data:
                        ended = True
                        break
                    if link.socket is not None:  # (in-process links wake no halted CPU)
                        self.busy_poll.poke()
                    link.burst = False  # the peer answered: our next frame may go at once
                    self._deliver_all(link, reader.feed(bytes(data)), len(data) == READ_BYTES)
        except (LinkError, DecodeError) as exc:
            log.warning("closing link to %x: %s", link.peer, exc)
            self.count("links_closed_for_bad_input")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("link to %x ended: %r", link.peer, exc)
            ended = True
        except Exception:  # a fault in handling this peer's input closes its link, not the node
            log.exception("closing link to %x: its input could not be handled", link.peer)
            self.count("links_closed_for_internal_error")
        finally:
            self._drop_link(link)
            self._running.discard(link)
            link.ended.set()
            # (Not `link.closed`: a writer that hit the peer's reset first has closed the
            # queue, and a crash in the middle of a write is the commonest case.)
            if ended and not (link.peer_closed or link.peer_left or link.closing
                              or self._closing):
                self._link_lost(link.peer)
            await trio.aclose_forcefully(link.stream)

    def _link_lost(self, peer: int) -> None:
        """A connection ended without the peer's goodbye (no `LinkClose`, no `Leave`): a
        killed peer's kernel closes its connections at once, and the cores probe it now
        rather than after a silence (`OverlayNode.link_lost`)."""
        self.count("links_lost")
        self.node.link_lost(peer, self.now())
        self._after()

    async def _shut_writing(self, link: Link) -> None:
        """Both sides said `LinkClose`: once ours is written, shut our side of the stream.
        The peer, which shuts its side only once it has read our `LinkClose`, has then read
        every frame we wrote here (see `_dial`)."""
        assert link.stream is not None
        await link.flushed()
        link.eof_sent = True
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await link.stream.send_eof()  # type: ignore[attr-defined]

    async def _write_loop(self, link: Link) -> None:
        try:
            await self._writer(link)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._drop_link(link)

    def _deliver_all(self, link: Link, frames: Iterable[bytes], full: bool = False) -> None:
        """Hand the cores every frame of one read, then act on their output once: the
        replies and acknowledgements of a batch leave in one write. The frames of a link read
        after the process was frozen may be as old as the freeze: the cores are told. That
        backlog lasts until a read comes back short of `READ_BYTES` (a `full` one leaves more
        waiting in the kernel: measured, a backlog of events and requests several reads long
        had its later requests run as fresh, twice and after their deadline)."""
        state, now = self.core.state, self.clock()
        state.arrival_age = age = self.freezes.backlog_age(link.read_at, now)
        if not (age and full):
            link.read_at = now
        try:
            for sealed in frames:
                self._deliver(link, sealed, now)
        finally:
            state.arrival_age = 0.0
            self._after()

    def _deliver(self, link: Link, sealed: bytes, clock_now: float) -> None:
        """One record: its frames, in order, at `clock_now` (trio's time of the read that
        brought it: one time for all the frames of a read). A record that took longer than
        the link's best (`overlay.transit`: a retransmitted segment, a queue in either kernel)
        has its frames told their age, as a frozen process's backlog is (the longer of the
        two counts)."""
        assert link.session is not None
        now = clock_now - self._epoch  # (`now()`, from the one reading)
        clock, payloads = link.session.open_batch(sealed)
        state = self.core.state
        age = state.arrival_age
        late = link.transit.extra(clock, clock_now)
        if late > age:
            state.arrival_age = late
        try:
            for payload in payloads:
                self._deliver_one(link, decode(payload), now)
        finally:
            state.arrival_age = age

    def _deliver_one(self, link: Link, msg: Message, now: float) -> None:
        if link.peer_closed:
            return  # nothing comes after the peer's LinkClose
        if type(msg) is LinkClose:
            link.peer_closed = True
            if not link.closing:  # the peer began: we answer after what we had queued
                self._say_close(link)
            return
        if type(msg) is Leave:
            link.peer_left = True  # (its connection ends next: no news)
        elif type(msg) is Addresses:
            directory = self.directory
            for node_id, host, port in msg.entries:
                if node_id != self.node_id:
                    directory[node_id] = (host, port)
            if len(directory) > DIRECTORY_LIMIT:
                stale = [n for n in directory if n not in self.links][: len(directory) // 4]
                for node_id in stale:
                    del directory[node_id]
            return
        self.node.receive(link.peer, msg, now)

    def _close_link(self, link: Link, why: str) -> None:
        """The link policy closed the link: its queued frames are dropped (as a lost hop's
        are), its reader stops and closes the stream, the next frame to its peer dials anew."""
        self.count(why)
        log.info("closing link to %x (%s)", link.peer, why)
        self._drop_link(link)
        if link.reading is not None:
            link.reading.cancel()

    def _drop_link(self, link: Link) -> None:
        link.queue.discard()
        link.pending = b""
        link.wakeup.set()
        link.emptied()
        if self.links.get(link.peer) is link:
            del self.links[link.peer]


def _reset_as_accepted(exc: OSError) -> bool:
    """Whether a failed connect was reset by the peer (every address tried, for trio's
    `open_tcp_stream`, which raises one OSError caused by a group of the attempts' errors):
    the peer accepted the connection, then reset it, where a closed port refuses it."""
    cause = exc.__cause__
    errors = list(cause.exceptions) if isinstance(cause, BaseExceptionGroup) else [exc]
    return all(getattr(error, "errno", None) == errno.ECONNRESET for error in errors)


def _refusal(exc: LinkError | trio.BrokenResourceError | trio.TooSlowError, received: bytes,
             hello: bool) -> LinkError:
    """The dialler's view of a handshake that failed before the peer's proof (`hello`: its
    hello checked out). Bytes that are no hello: not an iris node, or one of another protocol
    version. A close or silence: a node in trouble may do that once, a foreign service every
    time."""
    if hello:
        what = ("stopped answering" if isinstance(exc, trio.TooSlowError)
                else "closed the connection")
        return PeerRefused(f"{what} during the handshake", give_up_after=3)
    if isinstance(exc, trio.TooSlowError):
        if received:
            return PeerRefused(f"sent no iris handshake within {HANDSHAKE_TIMEOUT_S:g} s "
                               f"({_sent(received)})", give_up_after=2)
        return PeerRefused(f"accepted the connection but sent nothing within "
                           f"{HANDSHAKE_TIMEOUT_S:g} s (is it an iris node? a paused one is "
                           f"silent too)", give_up_after=2)
    if received:
        return PeerRefused(f"does not speak the iris protocol (or another version of it): "
                           f"{_sent(received)}")
    return PeerRefused("closed the connection without a word (is it an iris node?)",
                       give_up_after=3)
