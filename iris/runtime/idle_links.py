"""Which connections a node closes for being idle (`LinkPolicy.idle_close_s`, `max_links`).

A node talks once to many peers: the callers it answers, the subscribers a publisher copies
events to, the nodes it probes. Kept open, each of those connections holds a descriptor, kernel
buffers and two tasks, and a long-lived node would run out of descriptors. Every
`SWEEP_S` the runtime asks `idle_links` which of its connections to close; it closes them by
agreement (`overlay.messages.LinkClose`, see overlay.link_policy), so none loses a frame.

Activity is what a link read or was given to write: `Link.read_at` (set by every read) and
`Link.used` (set by every frame queued, turned into `Link.active_at` here), so that the hot
path pays one attribute store per frame and no clock read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from overlay.link_policy import LinkPolicy

SWEEP_S = 5.0
"""How often the links are looked over (idle times are known to within this)."""


class IdleCandidate(Protocol):
    """What the choice reads of a link (`iris.runtime.driver.Link`)."""

    used: bool
    active_at: float
    read_at: float

    @property
    def closable(self) -> bool: ...


L = TypeVar("L", bound=IdleCandidate)


def idle_links(links: Iterable[L], now: float, policy: LinkPolicy, count: int) -> list[L]:
    """The links to close now: each one idle for `policy.idle_close_s`, and, while more than
    `policy.max_links` of the `count` links would stay open, the ones idle longest. Only
    `closable` links (open, nothing queued or being written, not closing already) count."""
    idle: list[tuple[float, L]] = []
    for link in links:
        if link.used:
            link.used = False
            link.active_at = now
        if link.closable:
            idle.append((now - max(link.active_at, link.read_at), link))
    idle.sort(key=lambda item: item[0], reverse=True)
    chosen: list[L] = []
    for idle_s, link in idle:
        if idle_s < policy.idle_close_s and count - len(chosen) <= policy.max_links:
            break
        chosen.append(link)
    return chosen
