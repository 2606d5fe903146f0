"""One end of an overlay tunnel: its queue of messages to send, their chunks in sequence, and
the messages it receives, under the rules of `tunnel_flow` (chunking, reassembly, byte credit).

Memory: at most the send buffer on the sending side; at most the window plus one message in
assembly on the receiving side. On the wire the first chunk of a message carries the message
size + 1 (so an empty message is still a first chunk) and later chunks carry 0; chunks are
numbered, and a gap closes the tunnel.
"""

from __future__ import annotations

from collections import deque

from iris.core.tunnel_flow import (
    CHUNK,
    MAX_MESSAGE,
    MessageAssembler,
    ReceiveCredit,
    SendCredit,
    TunnelError,
    split,
)

__all__ = ["TunnelEnd", "TunnelError"]


class TunnelEnd:
    __slots__ = (
        "key", "peer", "send_buffer", "send_credit", "receive_credit", "closing",
        "open_deadline", "last_heard", "last_sent", "buffered", "_out", "_out_bytes",
        "_send_seq", "_recv_seq", "_assembler",
    )

    def __init__(self, key: tuple[int, int], peer: int | None, window: int, send_buffer: int,
                 now: float) -> None:
        self.key = key
        self.peer = peer  # None while an opened tunnel waits for its member
        self.send_buffer = send_buffer
        self.send_credit = SendCredit()  # granted by the peer's window and its credit messages
        self.receive_credit = ReceiveCredit(window, batch=window // 4)
        self.closing: str | None = None
        self.open_deadline = 0.0
        self.last_heard = now
        self.last_sent = now
        self.buffered = 0  # received bytes the application has not consumed yet
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._send_seq = 0
        self._recv_seq = 0
        self._assembler = MessageAssembler()

    # -- sending ---------------------------------------------------------------------------
    def queue(self, data: bytes) -> None:
        if self.closing is not None:
            raise TunnelError("tunnel is closing")
        if len(data) > MAX_MESSAGE:
            raise TunnelError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        if self._out_bytes + len(data) > self.send_buffer and self._out:
            raise TunnelError("tunnel send buffer is full")
        self._out.append(data)
        self._out_bytes += len(data)

    def has_output(self) -> bool:
        return bool(self._out)

    @property
    def queued_bytes(self) -> int:
        return self._out_bytes

    def chunks(self) -> list[tuple[int, int, bytes]]:
        """(seq, total, chunk) for every chunk the credit allows now: each queued message
        whose first chunk fits the credit, whole. (A list, not a generator: it is built once
        per send, and most sends are one chunk.)"""
        out, credit = self._out, self.send_credit
        ready: list[tuple[int, int, bytes]] = []
        seq = self._send_seq
        while out and credit.fits(min(len(out[0]), CHUNK)):
            data = out.popleft()
            size = len(data)
            self._out_bytes -= size
            credit.spend(size)
            for first, chunk in split(data):
                ready.append((seq, size + 1 if first else 0, chunk))
                seq += 1
        self._send_seq = seq
        return ready

    # -- receiving -------------------------------------------------------------------------
    def receive(self, seq: int, total: int, chunk: bytes) -> bytes | None:
        """Take one chunk; return a whole message when this chunk completes one. TunnelError
        when the peer broke the order, the framing or the credit."""
        if seq != self._recv_seq:
            raise TunnelError(f"chunk {seq} arrived where {self._recv_seq} was due")
        self._recv_seq += 1
        if total:
            self.receive_credit.started(len(chunk), total - 1)
        self.buffered += len(chunk)
        return self._assembler.add(total != 0, total - 1, chunk)

    def consumed(self, nbytes: int) -> int:
        """The application read `nbytes`; return the credit to grant now (0: not yet)."""
        nbytes = min(nbytes, self.buffered)
        self.buffered -= nbytes
        return self.receive_credit.consumed(nbytes)
