"""The Iris relay protocol v1.0-draft2, sans-IO: packets <-> bytes, both directions.

Every packet is a one-byte opcode and its fields: varint (unsigned LEB128), binary (varint
length + bytes), string (binary holding UTF-8), bool (one byte, 0 or 1; anything else is a
protocol violation). Each packet is declared once, as a `@packet(OPCODE)` class whose
annotations give the fields in wire order (`int` varint, `bytes` binary, `str` string, `bool`
bool); a field present only when earlier bools have given values is declared with `when`.
From that declaration the decorator builds the packet's parser and its encoder
`Cls.pack(*fields) -> bytes`, as straight-line code (the relay parses and encodes every
message, so a generic loop over field kinds would cost it a few microseconds each).

`ClientReader.feed(bytes)` returns the whole client packets received so far and keeps a
partial one for later; a violation stops it with `RelayError` in `error` (the connection is
then closed with the reason). `NodeReader` does the same for node packets (the client side).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, TypeVar, dataclass_transform

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


class RelayError(Exception):
    """The other end broke the protocol."""


class _NeedMore(Exception):
    """The buffer ends inside a packet."""


# -- field reading and writing ----------------------------------------------------------------
class Cursor:
    """Reads fields from a buffer at a position; `_NeedMore` when the buffer ends first."""

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


# -- packet declarations -----------------------------------------------------------------------
_KINDS = {"int": "varint", "bytes": "binary", "str": "string", "bool": "boolean"}


class Packet:
    """Base of every relay packet: subclasses are `@packet(OPCODE)` slotted dataclasses."""

    __slots__ = ()
    OPCODE: ClassVar[int]
    pack: ClassVar[Callable[..., bytes]]  # field values, in wire order -> the packet's bytes
    parse: ClassVar[Callable[[Cursor], Any]]  # the fields after the opcode -> the packet


def when(default: Any, **conditions: bool) -> Any:
    """A field on the wire only when the named earlier bool fields have the given values
    (else it is absent and takes `default`)."""
    return dataclasses.field(default=default, metadata={"when": conditions})


_P = TypeVar("_P", bound=Packet)


@dataclass_transform(eq_default=True, field_specifiers=(when,))
def packet(opcode: int) -> Callable[[type[_P]], type[_P]]:
    """Declare a packet: a slotted dataclass with its opcode, parser and encoder."""

    def declare(cls: type[_P]) -> type[_P]:
        cls = dataclasses.dataclass(slots=True)(cls)
        cls.OPCODE = opcode
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        for f in fields:
            if f.type not in _KINDS:
                raise TypeError(f"{cls.__name__}.{f.name}: no wire kind for {f.type!r}")
        cls.parse = staticmethod(_parser(cls, fields))
        cls.pack = staticmethod(_encoder(cls, opcode, fields))
        return cls

    return declare


def _condition(f: dataclasses.Field[Any], prefix: str) -> str:
    conditions = f.metadata.get("when", {})
    return " and ".join(f"{prefix}{name} is {value!r}" for name, value in conditions.items())


def _compile(source: str, name: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    exec(compile(source, f"<relay packet {name}>", "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


def _parser(cls: type, fields: Iterable[dataclasses.Field[Any]]) -> Callable[[Cursor], Any]:
    """`def parse(c): f_a = c.varint(); f_b = c.binary() if f_x is True else DEFAULT; ...`"""
    lines = ["def parse(c):"]
    namespace: dict[str, Any] = {"cls": cls}
    for f in fields:
        read = f"c.{_KINDS[f.type]}()"  # type: ignore[index]
        condition = _condition(f, "f_")
        if condition:
            namespace[f"d_{f.name}"] = f.default
            read = f"{read} if {condition} else d_{f.name}"
        lines.append(f"    f_{f.name} = {read}")
    lines.append(f"    return cls({', '.join(f'f_{f.name}' for f in fields)})")
    return _compile("\n".join(lines), "parse", namespace)


def _encoder(cls: type, opcode: int, fields: Iterable[dataclasses.Field[Any]]
             ) -> Callable[..., bytes]:
    """`def pack(a, b=DEFAULT): out = OP + varint(a); if x is True: out += ...` (the
    parameters are the field names, so callers may name them)."""
    namespace: dict[str, Any] = {"OP": _SMALL[opcode], "varint": varint, "binary": binary,
                                 "string": string, "boolean": boolean}
    params, body, always = [], [], ["OP"]
    for f in fields:
        if f.name in namespace or f.name == "out":
            raise TypeError(f"{cls.__name__}.{f.name}: a field may not be named so")
        if f.default is not dataclasses.MISSING:
            namespace[f"d_{f.name}"] = f.default
            params.append(f"{f.name}=d_{f.name}")
        else:
            params.append(f.name)
        write = f"{_KINDS[f.type]}({f.name})"  # type: ignore[index]
        condition = _condition(f, "")
        if condition:
            body.append(f"    if {condition}: out += {write}")
        elif body:  # after a conditional field, unconditional ones append too
            body.append(f"    out += {write}")
        else:
            always.append(write)
    lines = [f"def pack({', '.join(params)}):", f"    out = {' + '.join(always)}", *body,
             "    return out"]
    return _compile("\n".join(lines), "pack", namespace)


# -- client to node packets -----------------------------------------------------------------
@packet(INIT)
class Init(Packet):
    magic: str = CLIENT_MAGIC
    version: str = VERSION
    cluster: str = ""


@packet(CLOSE)
class Close(Packet):
    pass


@packet(BROADCAST)
class Broadcast(Packet):
    cluster: str
    message: bytes


@packet(REQUEST)
class Request(Packet):
    id: int
    cluster: str
    request: bytes
    timeout_ms: int


@packet(REPLY)
class Reply(Packet):
    id: int
    success: bool
    reply: bytes = when(b"", success=True)
    fault: str = when("", success=False)


@packet(SUBSCRIBE)
class Subscribe(Packet):
    topic: str


@packet(UNSUBSCRIBE)
class Unsubscribe(Packet):
    topic: str


@packet(PUBLISH)
class Publish(Packet):
    """The same fields both ways: a client publishes, the node delivers."""

    topic: str
    event: bytes


@packet(TUN_INIT)
class TunInit(Packet):
    id: int
    cluster: str
    timeout_ms: int


@packet(TUN_CONFIRM)
class TunConfirm(Packet):
    build_id: int
    tunnel_id: int


@packet(TUN_ALLOW)
class TunAllow(Packet):
    """The same fields both ways."""

    tunnel_id: int
    space: int


@packet(TUN_TRANSFER)
class TunTransfer(Packet):
    """The same fields both ways: `size` is the message's size on its first chunk, else 0."""

    tunnel_id: int
    size: int
    chunk: bytes


@packet(TUN_CLOSE)
class TunClose(Packet):
    tunnel_id: int


ClientPacket = (
    Init | Close | Broadcast | Request | Reply | Subscribe | Unsubscribe | Publish | TunInit
    | TunConfirm | TunAllow | TunTransfer | TunClose
)
"""Every packet a client sends the node."""


# -- node to client packets --------------------------------------------------------------------
@packet(INIT)
class NodeInit(Packet):
    magic: str = RELAY_MAGIC
    version: str = VERSION


@packet(DENY)
class Deny(Packet):
    magic: str = RELAY_MAGIC
    reason: str = ""


@packet(CLOSE)
class NodeClose(Packet):
    reason: str = ""


@packet(BROADCAST)
class NodeBroadcast(Packet):
    message: bytes


@packet(REQUEST)
class NodeRequest(Packet):
    id: int
    request: bytes
    timeout_ms: int


@packet(REPLY)
class NodeReply(Packet):
    id: int
    timed_out: bool
    success: bool = when(False, timed_out=False)
    reply: bytes = when(b"", timed_out=False, success=True)
    fault: str = when("", timed_out=False, success=False)


@packet(TUN_INIT)
class NodeTunInit(Packet):
    build_id: int
    chunk_limit: int


@packet(TUN_CONFIRM)
class NodeTunConfirm(Packet):
    id: int
    timed_out: bool
    chunk_limit: int = when(0, timed_out=False)


@packet(TUN_CLOSE)
class NodeTunClose(Packet):
    tunnel_id: int
    reason: str


NodePacket = (
    NodeInit | Deny | NodeClose | NodeBroadcast | NodeRequest | NodeReply | Publish
    | NodeTunInit | NodeTunConfirm | TunAllow | TunTransfer | NodeTunClose
)
"""Every packet the node sends a client."""


def tun_message_packets(tunnel_id: int, data: bytes, chunk_limit: int) -> bytes:
    """One tunnel message as TunTransfer packets (either direction): chunks of at most
    `chunk_limit`, the first carrying the message's size, the later ones 0."""
    if len(data) <= chunk_limit:
        return TunTransfer.pack(tunnel_id, len(data), data)
    return b"".join(TunTransfer.pack(tunnel_id, len(data) if first else 0, chunk)
                    for first, chunk in split(data, chunk_limit))


# -- readers -------------------------------------------------------------------------------------
P = TypeVar("P")


class PacketReader(Generic[P]):
    """Packets of one direction out of a byte stream. A violation stops the reader: `feed`
    returns the good packets before it, and `error` holds the reason (the caller answers
    those packets, then closes the connection)."""

    def __init__(self, packets: Iterable[type[Packet]], sender: str) -> None:
        self._parsers: list[Callable[[Cursor], P] | None] = [None] * 256
        for cls in packets:
            self._parsers[cls.OPCODE] = cls.parse
        self._sender = sender
        self._buffer = bytearray()
        self.error: RelayError | None = None

    def _parse(self, cursor: Cursor) -> P:
        op = cursor.byte()
        parse = self._parsers[op]
        if parse is None:
            raise RelayError(f"unknown opcode 0x{op:02x} from the {self._sender}")
        return parse(cursor)

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
            cursor = Cursor(buf, pos)
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


class ClientReader(PacketReader[ClientPacket]):
    """Client packets out of a byte stream (the node's side)."""

    def __init__(self) -> None:
        super().__init__((Init, Close, Broadcast, Request, Reply, Subscribe, Unsubscribe,
                          Publish, TunInit, TunConfirm, TunAllow, TunTransfer, TunClose),
                         "client")


class NodeReader(PacketReader[NodePacket]):
    """Node packets out of a byte stream (the client's side)."""

    def __init__(self) -> None:
        super().__init__((NodeInit, Deny, NodeClose, NodeBroadcast, NodeRequest, NodeReply,
                          Publish, NodeTunInit, NodeTunConfirm, TunAllow, TunTransfer,
                          NodeTunClose), "node")
