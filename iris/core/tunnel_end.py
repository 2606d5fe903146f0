"""One end of a tunnel: chunking, reassembly, ordering and byte-credit flow control.

The sender may put a chunk on the wire only while it holds credit for it, except the later
chunks of a message already started, so a message larger than the window cannot deadlock (the
receiver can only hand over whole messages). The receiver returns credit as its application
consumes bytes, in grants of at least a quarter window to keep the credit traffic small.
Memory: at most the send buffer on the sending side; at most the window plus one message in
assembly on the receiving side.

On the wire the first chunk of a message carries the message size + 1 (so an empty message is
still a first chunk) and later chunks carry 0.
"""

from __future__ import annotations

from collections import deque

from iris.core.messages import CHUNK


class TunnelError(Exception):
    """The tunnel is closed, its buffer is full, or the peer broke the protocol."""


class TunnelEnd:
    __slots__ = (
        "key", "peer", "window", "send_buffer", "credit", "closing", "open_deadline",
        "last_heard", "last_sent", "_out", "_out_bytes", "_offset", "_send_seq", "_recv_seq",
        "_assembling", "_expected", "buffered", "_grant",
    )

    def __init__(self, key: tuple[int, int], peer: int | None, window: int, send_buffer: int,
                 now: float) -> None:
        self.key = key
        self.peer = peer  # None while an opened tunnel waits for its member
        self.window = window
        self.send_buffer = send_buffer
        self.credit = 0
        self.closing: str | None = None
        self.open_deadline = 0.0
        self.last_heard = now
        self.last_sent = now
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._offset = 0  # bytes of _out[0] already sent
        self._send_seq = 0
        self._recv_seq = 0
        self._assembling: list[bytes] | None = None
        self._expected = 0
        self.buffered = 0  # received bytes the application has not consumed yet
        self._grant = 0

    # -- sending ---------------------------------------------------------------------------
    def queue(self, data: bytes) -> None:
        if self.closing is not None:
            raise TunnelError("tunnel is closing")
        if self._out_bytes + len(data) > self.send_buffer and self._out:
            raise TunnelError("tunnel send buffer is full")
        self._out.append(data)
        self._out_bytes += len(data)

    def has_output(self) -> bool:
        return bool(self._out)

    @property
    def queued_bytes(self) -> int:
        return self._out_bytes - self._offset

    def chunks(self):
        """Yield (seq, total, chunk) for every chunk the credit allows now."""
        out = self._out
        while out:
            data = out[0]
            start = self._offset
            chunk = data[start : start + CHUNK]
            if start == 0 and self.credit < max(len(chunk), 1):
                return
            total = len(data) + 1 if start == 0 else 0
            self.credit -= len(chunk)
            self._offset = start + len(chunk)
            if self._offset >= len(data):
                out.popleft()
                self._out_bytes -= len(data)
                self._offset = 0
            seq = self._send_seq
            self._send_seq += 1
            yield seq, total, chunk

    # -- receiving -------------------------------------------------------------------------
    def receive(self, seq: int, total: int, chunk: bytes) -> bytes | None:
        """Take one chunk; return a whole message when this chunk completes one."""
        if seq != self._recv_seq:
            raise TunnelError(f"chunk {seq} arrived where {self._recv_seq} was due")
        self._recv_seq += 1
        if total:
            if self._assembling is not None:
                raise TunnelError("a new message started inside another")
            self._assembling = []
            self._expected = total - 1
        elif self._assembling is None:
            raise TunnelError("a continuation chunk outside any message")
        self._assembling.append(chunk)
        self._expected -= len(chunk)
        self.buffered += len(chunk)
        if self._expected < 0:
            raise TunnelError("message longer than announced")
        if self._expected:
            return None
        parts = self._assembling
        self._assembling = None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def consumed(self, nbytes: int) -> int:
        """The application read `nbytes`; return the credit to grant now (0: not yet)."""
        nbytes = min(nbytes, self.buffered)
        self.buffered -= nbytes
        self._grant += nbytes
        if self._grant >= self.window // 4:
            grant, self._grant = self._grant, 0
            return grant
        return 0
