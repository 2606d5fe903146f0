"""The secure link between two nodes, sans-IO: framing, handshake, sealed frames.

Framing: every frame is a 4-byte big-endian length and that many bytes; a length above
`MAX_FRAME` is an error (the link closes) before any byte of the body is buffered.

Handshake (both sides speak at once, then each checks the other):
1. each side sends HELLO, a `LinkHello` wire message (ephemeral X25519 public key, node id,
   listen host and port; the wire frame carries the protocol version, so a node of another
   version is turned away here);
2. both compute the X25519 shared secret and derive, with HKDF-SHA256 salted with the network
   key over the transcript (dialer's HELLO then listener's HELLO), four keys: one AEAD key and
   one MAC key per direction;
3. each sends FINISHED = HMAC-SHA256(its MAC key, transcript) and checks the other's: a peer
   without the network key cannot produce it, and nothing routed passes before it checks out.
Ephemeral keys give forward secrecy; the network key never leaves the process.

Session: AES-256-GCM with a per-direction key and a 64-bit counter as nonce. The receiver
accepts only the exact next counter, so a replayed, reordered, altered or forged frame fails
and closes the link. (ChaCha20-Poly1305 until wire version 13: on CPUs with AES instructions,
as servers have, AES-GCM seals a small record in a third of the time and a 64 KiB one in a
third too; measured in docs/BENCHMARKS.md.)

Records (wire version 6): after the handshake every link frame is one sealed record, whose
plaintext is a batch of frames (each a 4-byte length and a message): whatever a writer takes
from its queue for one write is sealed with one AEAD call (`Session.seal_batch`), and the
receiver opens the record and checks every inner frame's length (`Session.open_batch`) before
any message is decoded. A record is at most MAX_RECORD bytes, so one message of MAX_FRAME
bytes still fits. Since wire version 11 the plaintext starts with the sender's clock (4 bytes,
milliseconds modulo 2**32), from which the receiver learns how late the record is
(`overlay.transit`); it is inside the AEAD, so nobody on the path can make a record look
older or younger.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from overlay.wire import (
    ID,
    MAX_FRAME,
    DecodeError,
    Message,
    blob,
    decode,
    encode,
    text,
    uint,
    wire_message,
)

HEADER = 4
TAG = 16  # the AEAD's authentication tag
CLOCK = 4  # the sender's clock at the start of a record's plaintext (`overlay.transit`)
MAX_BATCH = MAX_FRAME + HEADER  # the frames of one record: at least one whole frame
MAX_RECORD = CLOCK + MAX_BATCH + TAG  # a record on the wire (the frame limit once up)
NETWORK_KEY_BYTES = 32
_INFO = b"iris link v1"


class LinkError(Exception):
    """The peer broke the framing, the handshake or the session: close the link."""


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise LinkError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return len(payload).to_bytes(HEADER, "big") + payload


class FrameReader:
    """Accumulates stream bytes; yields whole frames."""

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buffer
        buf += data
        frames = []
        while len(buf) >= HEADER:
            size = int.from_bytes(buf[:HEADER], "big")
            if size > self.max_frame:
                raise LinkError(f"peer announced a frame of {size} bytes (limit {self.max_frame})")
            if len(buf) < HEADER + size:
                break
            frames.append(bytes(buf[HEADER : HEADER + size]))
            del buf[: HEADER + size]
        return frames


@wire_message(16, blob(32), ID, text(255), uint(65535))
class LinkHello(Message):
    """Each side's first handshake frame: who it is and where it listens."""

    public_key: bytes
    node_id: int
    host: str
    port: int


class Session:
    """Seals outgoing and opens incoming frames for one established link."""

    __slots__ = ("_send", "_recv", "_send_counter", "_recv_counter")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._send = AESGCM(send_key)
        self._recv = AESGCM(recv_key)
        self._send_counter = 0
        self._recv_counter = 0

    @staticmethod
    def _nonce(counter: int) -> bytes:
        return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")

    def seal(self, plaintext: bytes) -> bytes:
        nonce = self._nonce(self._send_counter)
        self._send_counter += 1
        return self._send.encrypt(nonce, plaintext, None)

    def open(self, sealed: bytes) -> bytes:
        try:
            plaintext = self._recv.decrypt(self._nonce(self._recv_counter), sealed, None)
        except Exception:  # InvalidTag: altered, forged, replayed or out of order
            raise LinkError(
                "frame failed authentication (altered, forged, replayed or reordered)") from None
        self._recv_counter += 1
        return plaintext

    def seal_batch(self, payloads: list[bytes], clock: int) -> bytes:
        """`payloads`, in order, as framed records ready to write: one sealed record for all
        of them (several only when they exceed MAX_BATCH together), each stamped with
        `clock`, the sender's clock field (`overlay.transit.clock_field`)."""
        stamp = clock.to_bytes(CLOCK, "big")
        records = []
        parts: list[bytes] = [stamp]
        size = 0
        for payload in payloads:
            n = len(payload)
            if n > MAX_FRAME:
                raise LinkError(f"frame of {n} bytes exceeds {MAX_FRAME}")
            if size + HEADER + n > MAX_BATCH and size:
                records.append(self._record(parts))
                parts, size = [stamp], 0
            parts.append(n.to_bytes(HEADER, "big"))
            parts.append(payload)
            size += HEADER + n
        if size:
            records.append(self._record(parts))
        return records[0] if len(records) == 1 else b"".join(records)

    def _record(self, parts: list[bytes]) -> bytes:
        sealed = self.seal(b"".join(parts))
        return len(sealed).to_bytes(HEADER, "big") + sealed

    def open_batch(self, sealed: bytes) -> tuple[int, list[bytes]]:
        """The sender's clock field and the frames of one record, each frame checked against
        MAX_FRAME and the record's end."""
        plain = self.open(sealed)
        end = len(plain)
        if end <= CLOCK:
            raise LinkError("empty record")
        clock = int.from_bytes(plain[:CLOCK], "big")
        frames = []
        at = CLOCK
        while at < end:
            if end - at < HEADER:
                raise LinkError("record ends inside a frame header")
            size = int.from_bytes(plain[at:at + HEADER], "big")
            at += HEADER
            if size > MAX_FRAME or at + size > end:
                raise LinkError(f"frame of {size} bytes does not fit its record")
            frames.append(plain[at:at + size])
            at += size
        return clock, frames


class Handshake:
    """One side of the handshake. Feed it the peer's frames; it tells what to send."""

    def __init__(
        self, network_key: bytes, node_id: int, host: str, port: int, dialer: bool
    ) -> None:
        if len(network_key) != NETWORK_KEY_BYTES:
            raise ValueError(f"the network key must be {NETWORK_KEY_BYTES} bytes")
        self._network_key = network_key
        self._dialer = dialer
        self._private = X25519PrivateKey.generate()
        public = self._private.public_key().public_bytes_raw()
        self._hello = encode(LinkHello(public, node_id, host, port))
        self._peer_hello: bytes | None = None
        self._keys: tuple[bytes, bytes, bytes, bytes] | None = None
        self._transcript = b""
        self.peer: LinkHello | None = None
        self.session: Session | None = None

    def hello(self) -> bytes:
        """The first frame to send."""
        return self._hello

    def receive(self, payload: bytes) -> bytes | None:
        """Take the peer's next handshake frame. Returns a frame to send (our FINISHED) or
        None; `session` is set once the peer's FINISHED checked out."""
        if self._peer_hello is None:
            return self._take_hello(payload)
        if self.session is None:
            self._check_finished(payload)
            return None
        raise LinkError("unexpected handshake frame")

    def _take_hello(self, payload: bytes) -> bytes:
        try:
            hello = decode(payload)
        except DecodeError as exc:
            raise LinkError(f"malformed handshake hello (or another protocol version): "
                            f"{exc}") from None
        if type(hello) is not LinkHello or len(hello.public_key) != 32:
            raise LinkError("malformed handshake hello")
        self._peer_hello = payload
        self.peer = hello
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(hello.public_key))
        except Exception:
            raise LinkError("bad ephemeral key") from None
        first, second = (self._hello, payload) if self._dialer else (payload, self._hello)
        self._transcript = hashlib.sha256(first + second).digest()
        material = HKDF(algorithm=hashes.SHA256(), length=128, salt=self._network_key,
                        info=_INFO + self._transcript).derive(shared)
        d2l_key, l2d_key, d_mac, l_mac = (material[i : i + 32] for i in range(0, 128, 32))
        if self._dialer:
            self._keys = (d2l_key, l2d_key, d_mac, l_mac)
        else:
            self._keys = (l2d_key, d2l_key, l_mac, d_mac)
        return hmac.new(self._keys[2], self._transcript, hashlib.sha256).digest()

    def _check_finished(self, payload: bytes) -> None:
        assert self._keys is not None
        expected = hmac.new(self._keys[3], self._transcript, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, payload):
            raise LinkError("peer does not know the network key (handshake proof failed)")
        self.session = Session(self._keys[0], self._keys[1])
