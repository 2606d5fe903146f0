"""The queue of one connection's outgoing frames: bounded, in order, with an optional lane ahead.

Every connection the node writes to queues through it: the overlay's links (control frames in
the priority lane ahead of bulk, `iris.runtime.driver`) and the relay's client connections (one
lane, written eagerly, `iris.runtime.eager_io`). A frame that does not fit is refused, and what
that means is the owner's call: a link drops the frame and counts it, the relay closes a client
that lets too much pile up.

The main lane is bounded in bytes. The priority lane, for small and urgent frames, is bounded in
frames, and its frames do not count against the main lane's bytes: a burst of maintenance takes
no room from data, and data never holds maintenance back. Bytes count from `push` until they are
`written`, so a write in progress is still inside the bound, and the `Backpressure` the queue
may report to sees the same figure.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iris.runtime.backpressure import Backpressure


class OutQueue:
    __slots__ = ("_frames", "_max_bytes", "_max_priority", "_pressure", "_priority", "_taken",
                 "closed", "queued_bytes")

    def __init__(self, max_bytes: int, max_priority_frames: int = 0,
                 pressure: Backpressure | None = None) -> None:
        self._frames: deque[bytes] = deque()  # the main lane
        self._priority: deque[bytes] = deque()  # the lane ahead of it
        self._max_bytes = max_bytes
        self._max_priority = max_priority_frames
        self._pressure = pressure
        self.queued_bytes = 0  # main-lane bytes pushed and not yet written
        self._taken = 0  # of those, the bytes taken by the write in progress
        self.closed = False  # finished or discarded: `push` refuses

    def __bool__(self) -> bool:
        """Frames wait to be taken (a write in progress does not count)."""
        return bool(self._priority or self._frames)

    def push(self, frame: bytes, priority: bool = False) -> bool:
        """Queue `frame`, in the priority lane if `priority`; False (and nothing queued) when
        its lane is full or the queue is closed."""
        if self.closed:
            return False
        if priority:
            if len(self._priority) >= self._max_priority:
                return False
            self._priority.append(frame)
            return True
        size = len(frame)
        if self.queued_bytes + size > self._max_bytes:
            return False
        self._frames.append(frame)
        self.queued_bytes += size
        if self._pressure is not None:
            self._pressure.add(size)
        return True

    def finish(self, last: bytes = b"") -> None:
        """Queue a last frame, even beyond the bound (the last word always goes), and close:
        what is queued is still written."""
        if last and not self.closed:
            self._frames.append(last)
            self.queued_bytes += len(last)
            if self._pressure is not None:
                self._pressure.add(len(last))
        self.closed = True

    def discard(self) -> None:
        """The connection is gone: drop everything, queued or being written, and close."""
        self.closed = True
        self._priority.clear()
        self._frames.clear()
        if self._pressure is not None:
            self._pressure.remove(self.queued_bytes)
        self.queued_bytes = self._taken = 0

    def take(self, max_bytes: int) -> list[bytes]:
        """The frames to write next, priority lane first, until they reach `max_bytes` (at
        least one, if any is queued). They stay counted until `written`."""
        priority, frames = self._priority, self._frames
        batch = []
        size = 0
        while priority and size < max_bytes:
            frame = priority.popleft()
            batch.append(frame)
            size += len(frame)
        taken = 0
        while frames and size < max_bytes:
            frame = frames.popleft()
            batch.append(frame)
            size += len(frame)
            taken += len(frame)
        self._taken += taken
        return batch

    def take_all(self) -> bytes:
        """Everything queued, joined, priority lane first (b"" when nothing is). It stays
        counted until `written`."""
        frames = self._frames
        if self._priority:
            data = b"".join([*self._priority, *frames])
            self._priority.clear()
        else:
            data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        self._taken = self.queued_bytes
        return data

    def written(self, rest: bytes = b"") -> None:
        """What was taken is with the kernel, except `rest`: the end of it (joined) that a
        write did not take, which goes first next time. (With a priority lane, whole batches
        only: `rest` counts as the main lane's.)"""
        if rest:
            self._frames.appendleft(rest)
            self._taken -= len(rest)
        taken = self._taken
        if taken:
            self._taken = 0
            self.queued_bytes -= taken
            if self._pressure is not None:
                self._pressure.remove(taken)
