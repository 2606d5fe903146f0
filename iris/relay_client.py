"""A Python client of the relay protocol: what the `iris request|broadcast|publish|subscribe|
serve|status` commands use to talk to a running `iris node`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from iris import relay_protocol as rp
from iris.errors import IrisError, RemoteError, TimeoutError

STATUS_CLUSTER = "iris.status"  # answered by the node itself, never routed


class RelayClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = rp.NodeReader()
        self.packets: list[object] = []
        self._next = 0

    @classmethod
    async def connect(cls, port: int = 55555, cluster: str = "", host: str = "127.0.0.1") -> RelayClient:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise IrisError(f"no node relay on {host}:{port} ({exc.strerror or exc})") from None
        client = cls(stream)
        await stream.send_all(rp.client_init(cluster))
        answer = await client.read()
        if isinstance(answer, rp.Deny):
            raise IrisError(f"the node refused: {answer.reason}")
        if not isinstance(answer, rp.NodeInit):
            raise IrisError(f"unexpected answer {answer!r}")
        return client

    async def read(self) -> object:
        while not self.packets:
            data = await self.stream.receive_some(65536)
            if not data:
                raise IrisError("the node closed the connection")
            self.packets += self.reader.feed(data)
            if self.reader.error is not None and not self.packets:
                raise IrisError(f"the node broke the protocol: {self.reader.error}")
        return self.packets.pop(0)

    async def request(self, cluster: str, data: bytes, timeout: float) -> bytes:
        self._next += 1
        await self.stream.send_all(rp.client_request(self._next, cluster, data, int(timeout * 1000)))
        while True:
            packet = await self.read()
            if isinstance(packet, rp.NodeReply) and packet.id == self._next:
                break
            if isinstance(packet, rp.NodeClose):
                raise IrisError(f"the node closed the connection: {packet.reason}")
        if packet.timed_out:
            raise TimeoutError("request timed out")
        if not packet.success:
            raise RemoteError(packet.fault)
        return packet.reply

    async def broadcast(self, cluster: str, data: bytes) -> None:
        await self.stream.send_all(rp.client_broadcast(cluster, data))

    async def publish(self, topic: str, data: bytes) -> None:
        await self.stream.send_all(rp.client_publish(topic, data))

    async def events(self, topic: str) -> AsyncIterator[bytes]:
        await self.stream.send_all(rp.client_subscribe(topic))
        while True:
            packet = await self.read()
            if isinstance(packet, rp.NodePublish) and packet.topic == topic:
                yield packet.event
            elif isinstance(packet, rp.NodeClose):
                return

    async def serve(self, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        """Answer the requests of the cluster this connection registered, one at a time."""
        while True:
            packet = await self.read()
            if isinstance(packet, rp.NodeRequest):
                try:
                    reply = await handler(packet.request)
                    await self.stream.send_all(rp.client_reply(packet.id, True, reply))
                except Exception as exc:  # the caller gets the text as a remote error
                    await self.stream.send_all(rp.client_reply(packet.id, False, fault=str(exc) or type(exc).__name__))
            elif isinstance(packet, rp.NodeClose):
                return

    async def status(self) -> dict[str, Any]:
        return json.loads(await self.request(STATUS_CLUSTER, b"", timeout=5.0))

    async def close(self) -> None:
        try:
            await self.stream.send_all(rp.client_close())
        finally:
            await self.stream.aclose()
