"""The Iris relay protocol v1.0-draft2, sans-IO: packets <-> bytes, both directions.

Every packet is a one-byte opcode and its fields: varint (unsigned LEB128), binary (varint
length + bytes), string (binary holding UTF-8), bool (one byte, 0 or 1; anything else is a
protocol violation). `RelayReader.feed(bytes)` returns the whole client packets received so far
and keeps a partial one for later; any violation raises `RelayError` (the connection is then
closed with the reason). `NodeReader` does the same for node packets (the client side); the
`client_*` functions encode client packets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from iris.core.tunnel_flow import split

CLIENT_MAGIC = "iris-client-magic"
RELAY_MAGIC = "iris-relay-magic"
VERSION = "v1.0-draft2"
MAX_FIELD = 16 * 1024 * 1024  # one binary field
MAX_VARINT_BYTES = 10

# Opcodes.
INIT, DENY, CLOSE, BROADCAST, REQUEST, REPLY = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
SUBSCRIBE, UNSUBSCRIBE, PUBLISH = 0x06, 0x07, 0x08
TUN_INIT, TUN_CONFIRM, TUN_ALLOW, TUN_TRANSFER, TUN_CLOSE = 0x09, 0x0A, 0x0B, 0x0C, 0x0D


P = TypeVar("P")


class RelayError(Exception):
    """The client broke the protocol."""


class _NeedMore(Exception):
    """The buffer ends inside a packet."""


# -- client to node packets -----------------------------------------------------------------
@dataclass(slots=True)
class Init:
    magic: str
    version: str
    cluster: str


@dataclass(slots=True)
class Close:
    pass


@dataclass(slots=True)
class Broadcast:
    cluster: str
    message: bytes


@dataclass(slots=True)
class Request:
    id: int
    cluster: str
    request: bytes
    timeout_ms: int


@dataclass(slots=True)
class Reply:
    id: int
    success: bool
    reply: bytes
    fault: str


@dataclass(slots=True)
class Subscribe:
    topic: str


@dataclass(slots=True)
class Unsubscribe:
    topic: str


@dataclass(slots=True)
class Publish:
    topic: str
    event: bytes


@dataclass(slots=True)
class TunInit:
    id: int
    cluster: str
    timeout_ms: int


@dataclass(slots=True)
class TunConfirm:
    build_id: int
    tunnel_id: int


@dataclass(slots=True)
class TunAllow:
    tunnel_id: int
    space: int


@dataclass(slots=True)
class TunTransfer:
    tunnel_id: int
    size: int
    chunk: bytes


@dataclass(slots=True)
class TunClose:
    tunnel_id: int


ClientPacket = (
    Init | Close | Broadcast | Request | Reply | Subscribe | Unsubscribe | Publish | TunInit
    | TunConfirm | TunAllow | TunTransfer | TunClose
)
"""Every packet a client sends the node."""


class _Cursor:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | bytearray, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise _NeedMore
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        pos = self.pos
        if pos < len(self.buf) and self.buf[pos] < 0x80:  # one byte: ids, sizes < 128
            self.pos = pos + 1
            return self.buf[pos]
        value = shift = 0
        for _ in range(MAX_VARINT_BYTES):
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise RelayError("varint longer than 10 bytes")

    def binary(self) -> bytes:
        size = self.varint()
        if size > MAX_FIELD:
            raise RelayError(f"field of {size} bytes exceeds {MAX_FIELD}")
        if self.pos + size > len(self.buf):
            raise _NeedMore
        data = bytes(self.buf[self.pos : self.pos + size])
        self.pos += size
        return data

    def string(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError:
            raise RelayError("string is not UTF-8") from None

    def boolean(self) -> bool:
        b = self.byte()
        if b > 1:
            raise RelayError(f"invalid bool {b}")
        return b == 1


def _parse(c: _Cursor) -> ClientPacket:
    op = c.byte()
    if op == INIT:
        return Init(c.string(), c.string(), c.string())
    if op == CLOSE:
        return Close()
    if op == BROADCAST:
        return Broadcast(c.string(), c.binary())
    if op == REQUEST:
        return Request(c.varint(), c.string(), c.binary(), c.varint())
    if op == REPLY:
        rid, success = c.varint(), c.boolean()
        return Reply(rid, True, c.binary(), "") if success else Reply(rid, False, b"", c.string())
    if op == SUBSCRIBE:
        return Subscribe(c.string())
    if op == UNSUBSCRIBE:
        return Unsubscribe(c.string())
    if op == PUBLISH:
        return Publish(c.string(), c.binary())
    if op == TUN_INIT:
        return TunInit(c.varint(), c.string(), c.varint())
    if op == TUN_CONFIRM:
        return TunConfirm(c.varint(), c.varint())
    if op == TUN_ALLOW:
        return TunAllow(c.varint(), c.varint())
    if op == TUN_TRANSFER:
        return TunTransfer(c.varint(), c.varint(), c.binary())
    if op == TUN_CLOSE:
        return TunClose(c.varint())
    raise RelayError(f"unknown opcode 0x{op:02x}")


class PacketReader(Generic[P]):
    """Packets out of a byte stream. A violation stops the reader: `feed` returns the good
    packets before it, and `error` holds the reason (the caller answers those packets, then
    closes the connection)."""

    def __init__(self, parse: Callable[[_Cursor], P]) -> None:
        self._parse = parse
        self._buffer = bytearray()
        self.error: RelayError | None = None

    def feed(self, data: bytes | bytearray) -> list[P]:
        if self.error is not None:
            return []
        if self._buffer:  # a packet was pending: the bytearray grows in place
            buf: bytes | bytearray = self._buffer
            buf += data
        else:  # parse the bytes as they came: slices of them are the fields, one copy each
            buf = data
        packets: list[P] = []
        pos = 0
        while pos < len(buf):
            cursor = _Cursor(buf, pos)
            try:
                packets.append(self._parse(cursor))
            except _NeedMore:
                break
            except RelayError as exc:
                self.error = exc
                break
            pos = cursor.pos
        if buf is self._buffer:
            del buf[:pos]
        else:
            self._buffer = bytearray(buf[pos:])
        if self.error is None and len(self._buffer) > MAX_FIELD + 64:
            self.error = RelayError("packet too large")
        return packets

    @property
    def pending(self) -> int:
        """Bytes of a packet not complete yet (a truncated packet when the stream ends)."""
        return len(self._buffer)


# -- node to client packets (what a client reads) ----------------------------------------------
@dataclass(slots=True)
class NodeInit:
    magic: str
    version: str


@dataclass(slots=True)
class Deny:
    magic: str
    reason: str


@dataclass(slots=True)
class NodeClose:
    reason: str


@dataclass(slots=True)
class NodeBroadcast:
    message: bytes


@dataclass(slots=True)
class NodeRequest:
    id: int
    request: bytes
    timeout_ms: int


@dataclass(slots=True)
class NodeReply:
    id: int
    timed_out: bool
    success: bool
    reply: bytes
    fault: str


@dataclass(slots=True)
class NodePublish:
    topic: str
    event: bytes


@dataclass(slots=True)
class NodeTunInit:
    build_id: int
    chunk_limit: int


@dataclass(slots=True)
class NodeTunConfirm:
    id: int
    timed_out: bool
    chunk_limit: int


@dataclass(slots=True)
class NodeTunClose:
    tunnel_id: int
    reason: str


NodePacket = (
    NodeInit | Deny | NodeClose | NodeBroadcast | NodeRequest | NodeReply | NodePublish
    | NodeTunInit | NodeTunConfirm | TunAllow | TunTransfer | NodeTunClose
)
"""Every packet the node sends a client."""


def _parse_node(c: _Cursor) -> NodePacket:
    op = c.byte()
    if op == INIT:
        return NodeInit(c.string(), c.string())
    if op == DENY:
        return Deny(c.string(), c.string())
    if op == CLOSE:
        return NodeClose(c.string())
    if op == BROADCAST:
        return NodeBroadcast(c.binary())
    if op == REQUEST:
        return NodeRequest(c.varint(), c.binary(), c.varint())
    if op == REPLY:
        rid, timed_out = c.varint(), c.boolean()
        if timed_out:
            return NodeReply(rid, True, False, b"", "")
        if c.boolean():
            return NodeReply(rid, False, True, c.binary(), "")
        return NodeReply(rid, False, False, b"", c.string())
    if op == PUBLISH:
        return NodePublish(c.string(), c.binary())
    if op == TUN_INIT:
        return NodeTunInit(c.varint(), c.varint())
    if op == TUN_CONFIRM:
        rid, timed_out = c.varint(), c.boolean()
        return NodeTunConfirm(rid, True, 0) if timed_out else NodeTunConfirm(rid, False, c.varint())
    if op == TUN_ALLOW:
        return TunAllow(c.varint(), c.varint())  # the same fields both ways
    if op == TUN_TRANSFER:
        return TunTransfer(c.varint(), c.varint(), c.binary())
    if op == TUN_CLOSE:
        return NodeTunClose(c.varint(), c.string())
    raise RelayError(f"unexpected opcode 0x{op:02x} from the node")


class RelayReader(PacketReader[ClientPacket]):
    """Client packets out of a byte stream (the node's side)."""

    def __init__(self) -> None:
        super().__init__(_parse)


class NodeReader(PacketReader[NodePacket]):
    """Node packets out of a byte stream (the client's side)."""

    def __init__(self) -> None:
        super().__init__(_parse_node)


# -- encoders -----------------------------------------------------------------------------------
_SMALL = [bytes((i,)) for i in range(0x80)]  # the one-byte varints (and opcodes)


def varint(value: int) -> bytes:
    if value < 0x80:
        if value < 0:
            raise ValueError(f"varint of a negative number {value}")
        return _SMALL[value]
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def binary(data: bytes) -> bytes:
    return varint(len(data)) + data


def string(text: str) -> bytes:
    return binary(text.encode("utf-8"))


def boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def init_packet(version: str = VERSION) -> bytes:
    return _SMALL[INIT] + string(RELAY_MAGIC) + string(version)


def deny_packet(reason: str) -> bytes:
    return _SMALL[DENY] + string(RELAY_MAGIC) + string(reason)


def close_packet(reason: str = "") -> bytes:
    return _SMALL[CLOSE] + string(reason)


def broadcast_packet(message: bytes) -> bytes:
    return _SMALL[BROADCAST] + binary(message)


def request_packet(rid: int, request: bytes, timeout_ms: int) -> bytes:
    return _SMALL[REQUEST] + varint(rid) + binary(request) + varint(timeout_ms)


def reply_packet(rid: int, timed_out: bool, success: bool = True, reply: bytes = b"",
                 fault: str = "") -> bytes:
    out = _SMALL[REPLY] + varint(rid) + boolean(timed_out)
    if timed_out:
        return out
    return out + boolean(success) + (binary(reply) if success else string(fault))


def publish_packet(topic: str, event: bytes) -> bytes:
    return _SMALL[PUBLISH] + string(topic) + binary(event)


def tun_init_packet(build_id: int, chunk_limit: int) -> bytes:
    return _SMALL[TUN_INIT] + varint(build_id) + varint(chunk_limit)


def tun_confirm_packet(rid: int, timed_out: bool, chunk_limit: int = 0) -> bytes:
    out = _SMALL[TUN_CONFIRM] + varint(rid) + boolean(timed_out)
    return out if timed_out else out + varint(chunk_limit)


def tun_allow_packet(tunnel_id: int, space: int) -> bytes:
    return _SMALL[TUN_ALLOW] + varint(tunnel_id) + varint(space)


def tun_transfer_packet(tunnel_id: int, size: int, chunk: bytes) -> bytes:
    return _SMALL[TUN_TRANSFER] + varint(tunnel_id) + varint(size) + binary(chunk)


def tun_message_packets(tunnel_id: int, data: bytes, chunk_limit: int) -> bytes:
    """One tunnel message as TunTransfer packets (either direction): chunks of at most
    `chunk_limit`, the first carrying the message's size, the later ones 0."""
    if len(data) <= chunk_limit:
        return tun_transfer_packet(tunnel_id, len(data), data)
    return b"".join(tun_transfer_packet(tunnel_id, len(data) if first else 0, chunk)
                    for first, chunk in split(data, chunk_limit))


def tun_close_packet(tunnel_id: int, reason: str) -> bytes:
    return _SMALL[TUN_CLOSE] + varint(tunnel_id) + string(reason)


# Client to node encoders (the CLI's client and other Python clients).
def client_init(cluster: str = "") -> bytes:
    return _SMALL[INIT] + string(CLIENT_MAGIC) + string(VERSION) + string(cluster)


def client_close() -> bytes:
    return _SMALL[CLOSE]


def client_broadcast(cluster: str, message: bytes) -> bytes:
    return _SMALL[BROADCAST] + string(cluster) + binary(message)


def client_request(rid: int, cluster: str, request: bytes, timeout_ms: int) -> bytes:
    return _SMALL[REQUEST] + varint(rid) + string(cluster) + binary(request) + varint(timeout_ms)


def client_reply(rid: int, success: bool, reply: bytes = b"", fault: str = "") -> bytes:
    outcome = binary(reply) if success else string(fault)
    return _SMALL[REPLY] + varint(rid) + boolean(success) + outcome


def client_subscribe(topic: str) -> bytes:
    return _SMALL[SUBSCRIBE] + string(topic)


def client_unsubscribe(topic: str) -> bytes:
    return _SMALL[UNSUBSCRIBE] + string(topic)


def client_publish(topic: str, event: bytes) -> bytes:
    return publish_packet(topic, event)  # the same fields both ways


def client_tun_init(rid: int, cluster: str, timeout_ms: int) -> bytes:
    return _SMALL[TUN_INIT] + varint(rid) + string(cluster) + varint(timeout_ms)


def client_tun_confirm(build_id: int, tunnel_id: int) -> bytes:
    return _SMALL[TUN_CONFIRM] + varint(build_id) + varint(tunnel_id)


def client_tun_allow(tunnel_id: int, space: int) -> bytes:
    return tun_allow_packet(tunnel_id, space)  # the same fields both ways


def client_tun_transfer(tunnel_id: int, size: int, chunk: bytes) -> bytes:
    return tun_transfer_packet(tunnel_id, size, chunk)  # the same fields both ways


def client_tun_close(tunnel_id: int) -> bytes:
    return _SMALL[TUN_CLOSE] + varint(tunnel_id)
