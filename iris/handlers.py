"""What an application's handlers look like, for type checkers.

`Node.register(cluster, handler)` takes any object with some of these methods (the node looks
for each by name, so a member without `handle_tunnel` refuses tunnels); `Node.subscribe`
takes an `EventHandler`. Declaring a class against these protocols lets a type checker hold it
to the signatures the node calls:

    class Echo(iris.RequestHandler):
        async def handle_request(self, data: bytes) -> bytes:
            return data
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from iris.runtime.tunnel import Tunnel

EventHandler = Callable[[bytes], Awaitable[None]]
"""A topic's handler: called with each event, one at a time, in order."""


@runtime_checkable
class RequestHandler(Protocol):
    async def handle_request(self, data: bytes) -> bytes:
        """The reply; an exception reaches the caller as RemoteError with its message."""
        ...


@runtime_checkable
class BroadcastHandler(Protocol):
    async def handle_broadcast(self, data: bytes) -> None: ...


@runtime_checkable
class SurveyHandler(Protocol):
    async def handle_survey(self, data: bytes) -> bytes:
        """This member's answer to a survey; an exception (or an answer after the deadline,
        `iris.time_left()`) counts as not answered. Surveys never fall back to
        `handle_request`."""
        ...


@runtime_checkable
class TunnelHandler(Protocol):
    async def handle_tunnel(self, tunnel: Tunnel) -> None:
        """Serve one tunnel a peer opened; the tunnel closes when this returns."""
        ...
