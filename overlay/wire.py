"""The wire codec: typed message classes <-> versioned msgpack frames.

A frame is the msgpack array `[WIRE_VERSION, type, field, ...]`. Each message class is a slotted
dataclass with a `TYPE` code and a `SPEC` tuple naming the wire kind of every field in order;
`decode` checks every field against its kind (type, length, range) before a message object
exists, so the protocol cores never see a value they did not expect. Anything malformed raises
`DecodeError` and nothing else: the driver closes that link and carries on.

Layers register their own classes (the overlay uses type codes below 32, the messaging layer
above), and a routed message carries the upper layer's message as a nested frame body.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform

import msgpack

WIRE_VERSION = 17  # 2: RouteAck carries a list of sequence numbers; 3: TunnelClose a code;
# 4: Request the time its caller has left; 5: tunnel messages name the end that sent them;
# 6: a link's sealed records carry a batch of frames (overlay.link; messages unchanged);
# 7: a Flood carries a batch of payloads; a Ping may ask for a table row, which its Pong
# carries, and a RowReply carries the sender's round trip to each node it names (proximity);
# surveys (SurveyAsk, SurveyAnswers); 8: a Subscribe carries the orphans its sender knows of;
# 9: a publisher's events sent straight to subscribers (DirectFlood, DirectSubscribe);
# 10: idle links close by agreement (LinkClose); 11: a link's records carry the sender's clock
# (overlay.link, overlay.transit; messages unchanged); 12: a child that moves up its tree tells
# its old parent so (Moved); 13: links seal with AES-256-GCM (overlay.link; messages unchanged);
# 14: a Pong says what the prober's greeting would have to beat (cell_us); 15: a Heartbeat
# says how long ago its sender last saw a failure (failure_age); 16: a Departed may be passed
# on among the dead node's table holders (held); 17: a Subscribe says how long its sender
# was cut off from its tree (cut_ms), floods go again over the mended path (Replayed), and
# a Flood says how long it waited on its way into the tree (age_ms)
MAX_FRAME = 16 * 1024 * 1024
MAX_NESTING = 4


class DecodeError(ValueError):
    """A frame that is not a valid message of this protocol version."""


class Message:
    """Base of every wire message: subclasses are `@wire_message` slotted dataclasses."""

    __slots__ = ()
    TYPE: ClassVar[int] = -1
    SPEC: ClassVar[tuple[Kind, ...]] = ()
    FIELDS: ClassVar[tuple[str, ...]] = ()  # the field names, in wire order
    # Declared for type checkers: every registered message class is a dataclass.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


_M = TypeVar("_M", bound=Message)


# -- field kinds ----------------------------------------------------------------------------
class Kind:
    """How one field travels: `pack` makes it msgpack-able, `unpack` validates and rebuilds."""

    def pack(self, value: Any) -> Any:
        return value

    def unpack(self, raw: Any, depth: int) -> Any:
        raise NotImplementedError


class _Id(Kind):
    def pack(self, value: int) -> bytes:
        return value.to_bytes(16, "big")

    def unpack(self, raw: Any, depth: int) -> int:
        if type(raw) is not bytes or len(raw) != 16:
            raise DecodeError("node id must be 16 bytes")
        return int.from_bytes(raw, "big")


class _Ids(Kind):
    """A list of ids, packed as one byte string of 16 bytes per id."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def pack(self, value: tuple[int, ...]) -> bytes:
        return b"".join(v.to_bytes(16, "big") for v in value)

    def unpack(self, raw: Any, depth: int) -> tuple[int, ...]:
        if type(raw) is not bytes or len(raw) % 16:
            raise DecodeError("id list must be a multiple of 16 bytes")
        if len(raw) > 16 * self.limit:
            raise DecodeError(f"id list longer than {self.limit}")
        return tuple(int.from_bytes(raw[i : i + 16], "big") for i in range(0, len(raw), 16))


class _UInt(Kind):
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def unpack(self, raw: Any, depth: int) -> int:
        if type(raw) is not int or not 0 <= raw <= self.limit:
            raise DecodeError(f"integer out of range 0..{self.limit}")
        return raw


class _UInts(Kind):
    """A list of unsigned integers, each at most `bound`."""

    def __init__(self, limit: int, bound: int) -> None:
        self.limit = limit
        self.bound = bound

    def pack(self, value: tuple[int, ...]) -> list[int]:
        return list(value)

    def unpack(self, raw: Any, depth: int) -> tuple[int, ...]:
        if type(raw) is not list or len(raw) > self.limit:
            raise DecodeError(f"expected a list of at most {self.limit} integers")
        bound = self.bound
        for v in raw:
            if type(v) is not int or not 0 <= v <= bound:
                raise DecodeError(f"integer out of range 0..{bound}")
        return tuple(raw)


class _Bool(Kind):
    def unpack(self, raw: Any, depth: int) -> bool:
        if type(raw) is not bool:
            raise DecodeError("expected a bool")
        return raw


class _Float(Kind):
    def __init__(self, limit: float) -> None:
        self.limit = limit

    def pack(self, value: float) -> float:
        return float(value)

    def unpack(self, raw: Any, depth: int) -> float:
        if type(raw) is int:
            raw = float(raw)
        if type(raw) is not float or not math.isfinite(raw) or not 0.0 <= raw <= self.limit:
            raise DecodeError(f"number out of range 0..{self.limit}")
        return raw


class _Bytes(Kind):
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def unpack(self, raw: Any, depth: int) -> bytes:
        if type(raw) is not bytes or len(raw) > self.limit:
            raise DecodeError(f"expected at most {self.limit} bytes")
        return raw


class _Blobs(Kind):
    """A non-empty list of byte strings (a batch of payloads), each of at most `each` bytes."""

    def __init__(self, limit: int, each: int) -> None:
        self.limit = limit
        self.each = each

    def pack(self, value: tuple[bytes, ...]) -> list[bytes]:
        return list(value)

    def unpack(self, raw: Any, depth: int) -> tuple[bytes, ...]:
        if type(raw) is not list or not 0 < len(raw) <= self.limit:
            raise DecodeError(f"expected a list of 1 to {self.limit} byte strings")
        each = self.each
        for v in raw:
            if type(v) is not bytes or len(v) > each:
                raise DecodeError(f"expected byte strings of at most {each} bytes")
        return tuple(raw)


class _Str(Kind):
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def unpack(self, raw: Any, depth: int) -> str:
        if type(raw) is not str or len(raw) > self.limit:
            raise DecodeError(f"expected a string of at most {self.limit} characters")
        return raw


class _Optional(Kind):
    def __init__(self, inner: Kind) -> None:
        self.inner = inner

    def pack(self, value: Any) -> Any:
        return None if value is None else self.inner.pack(value)

    def unpack(self, raw: Any, depth: int) -> Any:
        return None if raw is None else self.inner.unpack(raw, depth)


class _Nested(Kind):
    """Another registered message, carried as `[type, field, ...]` (a routed payload)."""

    def pack(self, value: Message) -> list[Any]:
        return _body(value)

    def unpack(self, raw: Any, depth: int) -> Message:
        if depth >= MAX_NESTING:
            raise DecodeError("messages nested too deeply")
        if type(raw) is not list or not raw:
            raise DecodeError("nested message must be a non-empty array")
        return _from_body(raw[0], raw[1:], depth + 1)


class _Records(Kind):
    """A list of fixed-shape records (tuples), each field of its own kind."""

    def __init__(self, limit: int, kinds: tuple[Kind, ...]) -> None:
        self.limit = limit
        self.kinds = kinds

    def pack(self, value: tuple[tuple[Any, ...], ...]) -> list[list[Any]]:
        return [[k.pack(v) for k, v in zip(self.kinds, rec, strict=True)] for rec in value]

    def unpack(self, raw: Any, depth: int) -> tuple[tuple[Any, ...], ...]:
        if type(raw) is not list or len(raw) > self.limit:
            raise DecodeError(f"expected at most {self.limit} records")
        width = len(self.kinds)
        out: list[tuple[Any, ...]] = []
        for rec in raw:
            if type(rec) is not list or len(rec) != width:
                raise DecodeError(f"a record must have {width} fields")
            out.append(tuple(k.unpack(v, depth) for k, v in zip(self.kinds, rec, strict=True)))
        return tuple(out)


ID = _Id()
BOOL = _Bool()
NESTED = _Nested()
U32 = _UInt(2**32 - 1)
U64 = _UInt(2**64 - 1)


def ids(limit: int) -> Kind:
    return _Ids(limit)


def uint(limit: int) -> Kind:
    return _UInt(limit)


def uints(limit: int, bound: int = 2**64 - 1) -> Kind:
    return _UInts(limit, bound)


def number(limit: float) -> Kind:
    return _Float(limit)


def blob(limit: int) -> Kind:
    return _Bytes(limit)


def blobs(limit: int, each: int) -> Kind:
    return _Blobs(limit, each)


def text(limit: int) -> Kind:
    return _Str(limit)


def optional(inner: Kind) -> Kind:
    return _Optional(inner)


def records(limit: int, *kinds: Kind) -> Kind:
    return _Records(limit, kinds)


# -- registry ----------------------------------------------------------------------------------
_REGISTRY: dict[int, type[Message]] = {}


@dataclass_transform(eq_default=True)
def wire_message(type_code: int, *spec: Kind) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: make a slotted dataclass of the class and register its wire type.

    `dataclass_transform` tells type checkers what the decorator does (an `__init__` taking
    the annotated fields in order), so a message built with the wrong fields is caught before
    it ever reaches the codec.
    """

    def wrap(cls: type[_M]) -> type[_M]:
        if type_code in _REGISTRY:
            raise ValueError(f"wire type {type_code} registered twice")
        new = dataclasses.dataclass(slots=True, eq=True, repr=True)(cls)
        names = tuple(f.name for f in dataclasses.fields(new))
        if len(names) != len(spec):
            raise TypeError(f"{cls.__name__}: SPEC does not match the fields")
        new.TYPE = type_code
        new.SPEC = spec
        new.FIELDS = names
        _REGISTRY[type_code] = new
        return new

    return wrap


_IDENTITY = (_UInt, _Bool, _Bytes, _Str)


# -- per-class codecs ----------------------------------------------------------------------------
# Each registered class gets three functions generated from its SPEC on first use (straight-line
# code, no loop over kinds, no getattr by name): `_wire_body` (the msgpack-able list), `_wire_from`
# (validate the fields and build the message) and `_wire_ids` (the ids it names). They produce
# and accept exactly what the generic kinds do; a field that fails a fast check goes to its kind's
# `unpack`, which raises the kind's own DecodeError.
class _Codec:
    __slots__ = ("body", "build", "ids")

    def __init__(self, body: Callable[[Any], list[Any]],
                 build: Callable[[list[Any], int], Any],
                 ids: Callable[[Any], list[int]]) -> None:
        self.body, self.build, self.ids = body, build, ids


_CODECS: dict[type[Message], _Codec] = {}


def _codec(cls: type[Message]) -> _Codec:
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _compile(cls)
    return codec


def _not_plainly_valid(kind: Any, a: str) -> str | None:
    """For the generated decoder: the condition under which field `a` of `kind` is not plainly
    valid and goes through the kind's full `unpack` (which raises the precise error), or None
    when every value does."""
    if type(kind) is _UInt:
        return f"type({a}) is not int or not 0 <= {a} <= {kind.limit}"
    if type(kind) is _Bytes:
        return f"type({a}) is not bytes or len({a}) > {kind.limit}"
    if type(kind) is _Str:
        return f"type({a}) is not str or len({a}) > {kind.limit}"
    if type(kind) is _Bool:
        return f"type({a}) is not bool"
    return None


def _compile(cls: type[Message]) -> _Codec:
    ns: dict[str, Any] = {"cls": cls, "_body": _body, "ids_in": ids_in, "_walk": _walk,
                          "DecodeError": DecodeError, "_int_from": int.from_bytes}
    packs: list[str] = []
    checks: list[str] = []
    id_lines: list[str] = []
    n = len(cls.SPEC)
    for i, (kind, name) in enumerate(zip(cls.SPEC, cls.FIELDS, strict=True)):
        k, a = f"k{i}", f"a{i}"
        ns[k] = kind
        # encoding
        if kind is ID:
            packs.append(f"m.{name}.to_bytes(16, 'big')")
        elif kind is NESTED:
            packs.append(f"_body(m.{name})")
        elif isinstance(kind, _IDENTITY):
            packs.append(f"m.{name}")
        else:
            packs.append(f"{k}.pack(m.{name})")
        # decoding
        checks.append(f"    {a} = f[{i}]")
        if kind is ID:
            checks.append(f"    {a} = _int_from({a}, 'big') if type({a}) is bytes"
                          f" and len({a}) == 16 else {k}.unpack({a}, depth)")
        elif (suspect := _not_plainly_valid(kind, a)) is not None:
            checks.append(f"    if {suspect}:")
            checks.append(f"        {a} = {k}.unpack({a}, depth)")
        else:
            checks.append(f"    {a} = {k}.unpack({a}, depth)")
        # ids named
        if not _names_ids(kind):
            continue
        if kind is ID:
            id_lines.append(f"    out.append(m.{name})")
        elif kind is NESTED:
            id_lines.append(f"    out += ids_in(m.{name})")
        elif isinstance(kind, _Ids):
            id_lines.append(f"    out += m.{name}")
        else:
            id_lines.append(f"    _walk({k}, m.{name}, out)")
    args = ", ".join(f"a{i}" for i in range(n))
    src = [
        "def body(m):",
        f"    return [{cls.TYPE}{''.join(', ' + p for p in packs)}]",
        "def build(f, depth):",
        f"    if len(f) != {n}:",
        f"        raise DecodeError('{cls.__name__} takes {n} fields, got %d' % len(f))",
        *checks,
        f"    return cls({args})",
        "def ids(m):",
        "    out = []",
        *id_lines,
        "    return out",
    ]
    exec("\n".join(src), ns)  # noqa: S102 - generated from the registered SPEC only
    return _Codec(ns["body"], ns["build"], ns["ids"])


def _body(msg: Message) -> list[Any]:
    cls = type(msg)
    codec = _CODECS.get(cls) or _codec(cls)
    return codec.body(msg)


def _from_body(type_code: Any, fields: list[Any], depth: int) -> Message:
    cls = _REGISTRY.get(type_code) if type(type_code) is int else None
    if cls is None:
        raise DecodeError(f"unknown message type {type_code!r}")
    codec = _CODECS.get(cls) or _codec(cls)
    msg: Message = codec.build(fields, depth)
    return msg


def _names_ids(kind: Kind) -> bool:
    if kind is ID or kind is NESTED or isinstance(kind, _Ids):
        return True
    if isinstance(kind, _Optional):
        return _names_ids(kind.inner)
    if isinstance(kind, _Records):
        return any(_names_ids(k) for k in kind.kinds)
    return False


def _walk(kind: Kind, value: Any, found: list[int]) -> None:
    """The ids in one field's value (the general case: optional fields, records)."""
    if value is None:
        return
    if kind is ID:
        found.append(value)
    elif isinstance(kind, _Ids):
        found.extend(value)
    elif isinstance(kind, _Optional):
        _walk(kind.inner, value, found)
    elif kind is NESTED:
        found.extend(ids_in(value))
    elif isinstance(kind, _Records):
        for rec in value:
            for k, v in zip(kind.kinds, rec, strict=True):
                _walk(k, v, found)


def ids_in(msg: Message) -> list[int]:
    """Every 128-bit id a message names, nested payloads and records included (keys and
    group ids too: a link layer resolves the ones that are nodes it knows an address for)."""
    cls = type(msg)
    codec = _CODECS.get(cls) or _codec(cls)
    found: list[int] = codec.ids(msg)
    return found


# One Packer for every encode (packb builds one per call). Threads may share it: `pack` of
# the builtin types a body holds runs in C from start to end without releasing the GIL, and
# leaves the Packer's buffer empty when it returns or raises, so two calls never interleave.
_pack = msgpack.Packer(use_bin_type=True).pack


def encode(msg: Message) -> bytes:
    """One frame body for `msg`."""
    cls = type(msg)
    codec = _CODECS.get(cls) or _codec(cls)
    body = codec.body(msg)
    body.insert(0, WIRE_VERSION)
    frame: bytes = _pack(body)  # msgpack ships no type hints
    return frame


def decode(data: bytes) -> Message:
    """Parse and validate one frame; raise DecodeError for anything malformed."""
    if len(data) > MAX_FRAME:
        raise DecodeError("frame too large")
    try:
        # unpackb bounds every string, array and map by the frame's own length.
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.exceptions.UnpackException) as exc:
        # msgpack's errors (ExtraData, FormatError, StackError, OutOfData) are ValueErrors.
        raise DecodeError(f"not a msgpack frame: {exc}") from None
    if type(raw) is not list or len(raw) < 2:
        raise DecodeError("frame must be an array [version, type, ...]")
    if type(raw[0]) is not int or raw[0] != WIRE_VERSION:
        raise DecodeError(f"unsupported wire version {raw[0]!r}")
    return _from_body(raw[1], raw[2:], 0)
