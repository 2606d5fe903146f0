"""What a relay session asks of the node (`iris.relay.session` makes them, the trio server
runs them, in order). Tunnel handles and responders are the server's objects, opaque here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Register:
    """Register the client as a member of `cluster`; then call `joined(ok)`."""

    cluster: str


@dataclass(slots=True)
class Unregister:
    """The member left: drop its registration."""


@dataclass(slots=True)
class Broadcast:
    """Broadcast into the overlay; a refusal (size limit) calls `refused(reason)`."""

    cluster: str
    data: bytes


@dataclass(slots=True)
class Publish:
    """Publish into the overlay; a refusal (size limit) calls `refused(reason)`."""

    topic: str
    data: bytes


@dataclass(slots=True)
class Ask:
    """The client's request into the overlay; its outcome calls `answered(rid, ...)`."""

    rid: int
    cluster: str
    data: bytes
    timeout_s: float


@dataclass(slots=True)
class Survey:
    """This project's extension: the client's survey (a request to `SURVEY_CLUSTER`, whose
    data is the cluster's name, a NUL byte and the question); its outcome calls
    `answered(rid, ...)` as a request's does."""

    rid: int
    data: bytes
    timeout_s: float


@dataclass(slots=True)
class Status:
    """The node's own view as JSON; call `status(rid, data)`."""

    rid: int


@dataclass(slots=True)
class Answer:
    """Answer a request the member was handed (reply, or fault when `reply` is None)."""

    responder: Any
    reply: bytes | None
    fault: str = ""


@dataclass(slots=True)
class Drop:
    """A request for the member whose caller's deadline passed before it could be handed
    over: not started, not answered (the caller's own timeout reports it)."""

    responder: Any


@dataclass(slots=True)
class Subscribe:
    topic: str


@dataclass(slots=True)
class Unsubscribe:
    topic: str


@dataclass(slots=True)
class OpenTunnel:
    """Open an overlay tunnel (without holding up the client's other packets); then call
    `tunnel_opened(tid, handle or None)`."""

    tid: int
    cluster: str
    timeout_s: float


@dataclass(slots=True)
class CarryTunnel:
    """The tunnel is established both ways: move its messages (`to_client` for each message
    from the overlay; `SendOnTunnel` the other way)."""

    tid: int
    handle: Any


@dataclass(slots=True)
class SendOnTunnel:
    """A whole message from the client, for the overlay tunnel in order; call
    `tunnel_sent(tid, handle, len(data))` once it is on it."""

    tid: int
    handle: Any
    data: bytes


@dataclass(slots=True)
class Resume:
    """The message `to_client` held back went out: take the next one from the overlay."""

    tid: int


@dataclass(slots=True)
class CloseTunnel:
    handle: Any


Command = (Register | Unregister | Broadcast | Publish | Ask | Survey | Status | Answer | Drop
           | Subscribe | Unsubscribe | OpenTunnel | CarryTunnel | SendOnTunnel | Resume
           | CloseTunnel)
