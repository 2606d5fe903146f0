"""`iris.aio.RelayClient`: the relay protocol's Python client, for asyncio programs.

It drives the trio client (`iris.relay.client.RelayClient`) through the loop's `Guest`, as
`iris.aio.Node` drives a node: the same methods, arguments and errors; a member's handler and
subscription handlers are the application's asyncio coroutines (see `iris.aio.node`).

    async with iris.aio.RelayClient.open(55555) as client:
        reply = await client.request("echo", b"hi", timeout=1.0)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from iris.aio.guest import Guest
from iris.aio.node import EventHandler, Subscription, Tunnel, handler_for
from iris.relay import client as trio_client


class RelayClient:
    """A connection to a node's relay. Obtain one with `RelayClient.open`."""

    def __init__(self, guest: Guest, client: trio_client.RelayClient) -> None:
        self._guest = guest
        self._client = client
        self._subscriptions: dict[str, Subscription] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int = 55555, cluster: str = "", handler: Any = None,
                   host: str = "127.0.0.1", max_concurrency: int = 64
                   ) -> AsyncIterator[RelayClient]:
        """Connect to a node's relay; with `cluster`, as a member of it served by `handler`
        (asyncio `handle_request`, `handle_broadcast`, `handle_tunnel`). Leaving the block
        closes the connection."""
        guest = await Guest.acquire()
        try:
            adapted = None if handler is None else handler_for(guest, handler, node=False)
            client, leave = await guest.hold(trio_client.RelayClient.open(
                port, cluster, adapted, host, max_concurrency))
            face = cls(guest, client)
            try:
                yield face
            finally:
                await leave()
                for subscription in face._subscriptions.values():
                    subscription.close()
        finally:
            await guest.release()

    async def request(
        self, cluster: str, data: bytes,
        timeout: float = 5.0,  # noqa: ASYNC109 - the request's own deadline, sent to the node
    ) -> bytes:
        reply: bytes = await self._guest.call(self._client.request, cluster, data, timeout)
        return reply

    async def broadcast(self, cluster: str, data: bytes) -> None:
        await self._guest.call(self._client.broadcast, cluster, data)

    async def publish(self, topic: str, data: bytes) -> None:
        await self._guest.call(self._client.publish, topic, data)

    async def subscribe(self, topic: str, handler: EventHandler) -> None:
        """Call the coroutine function `handler` with each event of `topic`, one at a time,
        in order (through a `Subscription`, as a node's events)."""
        subscription = Subscription(self._guest, topic, handler)
        try:
            await self._guest.call(self._client.subscribe, topic, subscription.accept)
        except BaseException:
            subscription.close()
            raise
        self._subscriptions[topic] = subscription

    async def unsubscribe(self, topic: str) -> None:
        subscription = self._subscriptions.pop(topic, None)
        if subscription is not None:
            subscription.close()
        await self._guest.call(self._client.unsubscribe, topic)

    async def tunnel(
        self, cluster: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - the opening's own deadline, as in the trio API
    ) -> Tunnel:
        tunnel = await self._guest.call(self._client.tunnel, cluster, timeout)
        return Tunnel(self._guest, tunnel)

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = await self._guest.call(self._client.status)
        return status

    async def wait_closed(self) -> str:
        """Return once the connection ended, with the reason."""
        reason: str = await self._guest.call(self._client.wait_closed)
        return reason
