"""Socket reads and writes of the relay's client connections without needless loop passes.

trio's `receive_some` and `send_all` each end in a checkpoint, a pass of the run loop, even
when the kernel had the data or took it at once; and a writer task costs another pass to wake.
A relayed request is read twice and written twice, so these passes were most of its cost. As
asyncio's transports do, the connections here call the non-blocking socket directly and only
wait (and so yield) when the kernel has nothing to read or no room to write:

- `EagerReader.receive` reads at once when data is there; it waits for readability only when
  there is none, and does not pass the loop again after such a wait.
- `Outbox` writes its queue (an `OutQueue`, as the overlay's links have) at once (`os.write`)
  when no write is in progress; only what the kernel does not take waits for the writer task.

Packets queued while a relay reader handles one read are written together when that read is
done (`Flusher.batch`): one write per connection per read. Packets queued from anywhere else (a
reply from the overlay, an event) are written by one flusher task for all connections at once.
Streams without a socket (in-memory ones) use the plain trio calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

from iris.runtime.backpressure import Backpressure
from iris.runtime.out_queue import OutQueue


class Outbox:
    """The queue of one connection (an `OutQueue` of `limit` bytes), written eagerly; its
    bytes also count in `pressure` (what several connections share) until written or
    discarded."""

    def __init__(self, stream: trio.abc.Stream, flusher: Flusher, limit: int,
                 pressure: Backpressure | None = None) -> None:
        self.stream = stream
        self._flusher = flusher
        self._queue = OutQueue(limit, pressure=pressure)
        # The socket object, not its number: once closed its fileno() is -1, where a number
        # kept from before could already name another connection's new socket.
        self._socket = getattr(stream, "socket", None)  # None: the writer task only
        self._listed = False  # in the flusher's list of outboxes to write
        self._writing = False  # the writer task is in send_all: it writes what comes next too
        self._wakeup = trio.Event()

    @property
    def queued_bytes(self) -> int:
        """Bytes queued and not yet written (a write in progress included)."""
        return self._queue.queued_bytes

    def push(self, packet: bytes) -> bool:
        """Queue `packet`; False (and nothing queued) if the queue would exceed its limit."""
        if not self._queue.push(packet):
            return False
        if not self._listed:
            self._listed = True
            self._flusher.add(self)
        return True

    def finish(self, last: bytes = b"") -> None:
        """Queue a final packet (beyond the limit); the writer ends once all is written."""
        self._queue.finish(last)
        self._wakeup.set()

    def discard(self) -> None:
        """The connection is gone: what it had queued is dropped (and no longer counted)."""
        self._queue.discard()
        self._wakeup.set()

    def flush(self) -> None:
        """Write what is queued now if the kernel takes it; leave the rest to the writer."""
        self._listed = False
        if self._writing:
            return
        queue = self._queue
        data = queue.take_all()
        if not data:
            return
        written = write_now(self._socket, data)
        if written < len(data):
            queue.written(data[written:])
            self._wakeup.set()
        else:
            queue.written()

    async def run_writer(self) -> None:
        """Write what `flush` could not, until `finish` and everything is written."""
        queue = self._queue
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while data := queue.take_all():
                self._writing = True
                try:
                    await self.stream.send_all(data)
                finally:
                    self._writing = False
                queue.written()
            if queue.closed:
                return


def write_now(sock: Any, data: bytes) -> int:
    """Hand `data` to the kernel at once, as much as it takes: the bytes written, 0 for a
    stream without a socket (None), a closed one, one that would block or one that broke
    (the writer's `send_all` then finds out which)."""
    if sock is None:
        return 0
    fd = sock.fileno()
    if fd < 0:
        return 0
    try:
        return os.write(fd, data)
    except OSError:
        return 0


class EagerReader:
    """Reads one stream; see the module docstring."""

    def __init__(self, stream: trio.abc.Stream, max_bytes: int = 65536) -> None:
        self._stream = stream
        self._max = max_bytes
        self._socket = getattr(stream, "socket", None)  # see Outbox: never a kept number
        self._fresh = True  # no call yet

    async def receive(self) -> bytes:
        """The next bytes (b"" at the end of the stream); OSError when the connection broke,
        trio.ClosedResourceError once the stream was closed. It yields once per call, like
        trio's: by waiting when there was nothing to read, or else by a checkpoint after the
        read (so a busy client does not starve the others) - except on the first call, which
        comes right after the task started: what a new client sent first (its Init) is
        handled in the same pass, not one later."""
        socket = self._socket
        if socket is None:
            return bytes(await self._stream.receive_some(self._max))
        waited, self._fresh = self._fresh, False
        while True:
            fd = socket.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("the stream was closed")
            try:
                data = os.read(fd, self._max)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(socket)
                waited = True
                continue
            if not waited:
                await trio.lowlevel.checkpoint()
            return data


class Flusher:
    """Writes the outboxes that got packets: at the end of a reader's batch, or from its task."""

    def __init__(self) -> None:
        self._listed: list[Outbox] = []
        self._batching: set[trio.lowlevel.Task] = set()
        self._wakeup = trio.Event()

    def add(self, outbox: Outbox) -> None:
        self._listed.append(outbox)
        if self._batching:
            try:
                task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
            except RuntimeError:  # a call from the host loop of trio's guest mode (iris.aio)
                task = None
            if task in self._batching:
                return  # written at the end of its batch
        self._wakeup.set()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within the block, packets queued by the current task wait for its end. (Other
        tasks, running while this one waits, still get theirs written by the flusher task.)"""
        task = trio.lowlevel.current_task()
        if task in self._batching:  # inside an outer batch of this task: its end writes
            yield
            return
        self._batching.add(task)
        try:
            yield
        finally:
            self._batching.discard(task)
            self.flush()

    def flush(self) -> None:
        listed, self._listed = self._listed, []
        for outbox in listed:
            outbox.flush()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self.flush()
