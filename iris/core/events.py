"""What the messaging core tells the application (drained from `MessagingCore.events`)."""

from __future__ import annotations

from dataclasses import dataclass


class Event:
    """Base of everything the messaging core tells the application. Drivers dispatch on the
    concrete type (a table keyed by class), not on a chain of checks."""

    __slots__ = ()


@dataclass(slots=True)
class Joined(Event):
    """A registration or subscription is grafted: members now reach it."""

    name: str
    topic: bool


@dataclass(slots=True)
class RequestReceived(Event):
    """Answer with `MessagingCore.reply(token, ...)`. `deadline` (core time) is when the
    caller gives up on it."""

    cluster: str
    token: int
    payload: bytes
    deadline: float


@dataclass(slots=True)
class RequestDone(Event):
    """The outcome of `MessagingCore.request`: `status` is OK, REMOTE_ERROR, NO_MEMBERS,
    REFUSED or TIMEOUT (see iris.core.messages)."""

    req_id: int
    status: int
    payload: bytes
    error: str


@dataclass(slots=True)
class BroadcastReceived(Event):
    """Acknowledge with `MessagingCore.broadcast_done(cluster)` once handled."""

    cluster: str
    payload: bytes


@dataclass(slots=True)
class EventReceived(Event):
    """Acknowledge with `MessagingCore.event_done(topic, len(payload))` once consumed."""

    topic: str
    payload: bytes
    origin: int
    seq: int


@dataclass(slots=True)
class TunnelIncoming(Event):
    """A peer opened a tunnel to our cluster; it is open."""

    key: tuple[int, int]
    cluster: str


@dataclass(slots=True)
class TunnelOpened(Event):
    key: tuple[int, int]


@dataclass(slots=True)
class TunnelMessage(Event):
    """One whole message; return its bytes with `tunnel_consumed` once read."""

    key: tuple[int, int]
    data: bytes


@dataclass(slots=True)
class TunnelDrained(Event):
    """The peer granted credit and queued data went out: a waiting sender may go on."""

    key: tuple[int, int]


@dataclass(slots=True)
class TunnelClosed(Event):
    """The tunnel is gone (or never opened). `code` says why: OK (closed in order by either
    end), NO_MEMBERS, REFUSED, TIMEOUT (an opening nobody accepted in time), BROKEN or LOST
    (see iris.core.messages); `reason` in words."""

    key: tuple[int, int]
    code: int
    reason: str


@dataclass(slots=True)
class SurveyReceived(Event):
    """A survey's question reached this member: answer with `MessagingCore.survey_answer(token,
    data)`, or `survey_answer(token, None)` to give none. `deadline` (core time) is when this
    node sends its batch on: an answer after it is not counted."""

    cluster: str
    token: int
    payload: bytes
    deadline: float


@dataclass(slots=True)
class SurveyDone(Event):
    """The outcome of `MessagingCore.survey`: `status` OK (the root's batch came back),
    NO_MEMBERS (the root knew of no member), REFUSED (a limit) or TIMEOUT (no batch came back
    in time). `known`: members the tree knew of; `answers`: (member node id, answer);
    `overflow`: answers beyond the survey's byte or member bound were left out."""

    sid: int
    status: int
    known: int
    answers: tuple[tuple[int, bytes], ...]
    overflow: bool
    error: str
