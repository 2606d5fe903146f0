"""The rules every tunnel end follows, wherever it runs: the overlay's tunnel between two nodes
(`TunnelEnd`), the relay's tunnel between a client and its node (the server's side), and the
Python relay client's side. One implementation, so the three cannot drift apart.

- Chunking: a message travels in chunks of at most `CHUNK` bytes, the first one marked as the
  start of a message and carrying its size, the later ones not (each protocol writes the mark
  its own way on the wire: the overlay sends size + 1, so that an empty message is still a
  first chunk; the relay protocol sends the size, as its messages are never empty).
- Byte credit: the receiver lets the sender send `WINDOW` bytes ahead of what it consumed. A
  message may start once its first chunk fits the credit; it then spends its whole size,
  since its later chunks go regardless (a message larger than the window cannot deadlock: the
  receiver can only hand over whole messages). The receiver returns credit as its application
  consumes bytes, and turns away a message started beyond the credit it granted.
"""

from __future__ import annotations

from collections.abc import Sequence

CHUNK = 64 * 1024
"""The largest chunk of a tunnel message, on the overlay and announced to relay clients."""

WINDOW = 4 * 1024 * 1024
"""Credit one tunnel end grants the other by default."""

MAX_MESSAGE = 16 * 1024 * 1024
"""The largest tunnel message. A message's later chunks go regardless of credit, so without
this bound a peer announcing a huge one could make the receiver hold any amount of it."""


class TunnelError(Exception):
    """The tunnel is closed, its buffer is full, or the other end broke the protocol."""


class TunnelProtocolError(TunnelError):
    """The other end broke the tunnel's chunking or credit rules; the tunnel must close."""


def split(data: bytes, limit: int = CHUNK) -> Sequence[tuple[bool, bytes]]:
    """(is first chunk, chunk) for each chunk of one message, in order. (A sequence, not a
    generator: most messages are one chunk, and this is paid per message.)"""
    if len(data) <= limit:
        return ((True, data),)
    return [(start == 0, data[start : start + limit]) for start in range(0, len(data), limit)]


class MessageAssembler:
    """Whole messages out of chunks. `add` returns the message once its last chunk arrived;
    TunnelProtocolError when the chunks break the framing."""

    __slots__ = ("parts", "expected")

    def __init__(self) -> None:
        self.parts: list[bytes] | None = None  # the message being assembled
        self.expected = 0  # its bytes still to come

    @property
    def pending(self) -> int:
        """Bytes held of a message not whole yet."""
        return sum(map(len, self.parts)) if self.parts else 0

    @property
    def inside_message(self) -> bool:
        return self.parts is not None

    def add(self, first: bool, size: int, chunk: bytes) -> bytes | None:
        """Take one chunk; `size` is the message's size on its first chunk (ignored after)."""
        if first:
            if self.parts is not None:
                raise TunnelProtocolError("a new message started inside another")
            if len(chunk) == size:
                return chunk  # a whole message in one chunk: most of them
            self.parts, self.expected = [], size
        elif self.parts is None:
            raise TunnelProtocolError("a continuation chunk outside any message")
        self.parts.append(chunk)
        self.expected -= len(chunk)
        if self.expected > 0:
            return None
        parts, self.parts = self.parts, None
        if self.expected < 0:
            raise TunnelProtocolError("message longer than announced")
        return b"".join(parts) if len(parts) != 1 else parts[0]


class SendCredit:
    """The bytes the other end lets us send. A message may start once its first chunk fits
    (at least 1 byte of credit, so that empty messages wait for credit too); it then spends
    its whole size."""

    __slots__ = ("available",)

    def __init__(self, available: int = 0) -> None:
        self.available = available

    def grant(self, nbytes: int) -> None:
        self.available += nbytes

    def fits(self, first_chunk: int) -> bool:
        return self.available >= max(first_chunk, 1)

    def spend(self, nbytes: int) -> None:
        self.available -= nbytes


class ReceiveCredit:
    """The credit this end granted the other, and how it is given back.

    `granted` is what the other end may still start messages with; `started` checks a new
    message against it. Consumed bytes are given back once at least `batch` of them add up
    (a quarter window on the overlay keeps the credit traffic small; 0 gives back at once)."""

    __slots__ = ("granted", "batch", "_owed")

    def __init__(self, granted: int, batch: int = 0) -> None:
        self.granted = granted
        self.batch = batch
        self._owed = 0

    def grant(self, nbytes: int) -> None:
        """Let the other end send `nbytes` more (the caller tells it so)."""
        self.granted += nbytes

    def started(self, first_chunk: int, size: int) -> None:
        """The other end started a message of `size` bytes: TunnelProtocolError if its first
        chunk was beyond the credit granted."""
        if first_chunk > self.granted:
            raise TunnelProtocolError("message sent beyond the credit granted")
        if size > MAX_MESSAGE:
            raise TunnelProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE}")
        self.granted -= size

    def consumed(self, nbytes: int) -> int:
        """The application took `nbytes`: the credit to give back now (0: not yet)."""
        self._owed += nbytes
        if self._owed > 0 and self._owed >= self.batch:
            grant, self._owed = self._owed, 0
            self.granted += grant
            return grant
        return 0
