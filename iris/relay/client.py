"""Python clients of the relay protocol: programs that use a running `iris node` without
embedding one (the `iris request|broadcast|publish|subscribe|serve|status` commands, and any
trio application).

    async with RelayClient.open(55555, cluster="echo", handler=Echo()) as client:
        reply = await client.request("other", b"hi", timeout=1.0)   # from any number of tasks
        await client.subscribe("news", on_event)

`RelayClient` multiplexes everything over one connection, as the Go client does: requests from
any number of tasks at once (matched to their replies by id), a member's requests served
concurrently (`handle_request`, at most `max_concurrency` at once), broadcasts (`handle_broadcast`)
and each topic's events (its handler) in order, and tunnels both ways (`tunnel`, and a
member's `handle_tunnel`; see `iris.relay.tunnel`). `RelayStream` is the connection underneath,
packet by packet.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from iris.core.limits import check_payload
from iris.core.tunnel_flow import WINDOW as TUNNEL_WINDOW
from iris.errors import ClosedError, IrisError, RemoteError, TimeoutError
from iris.relay import protocol as rp
from iris.relay import survey as relay_survey
from iris.relay.session import STATUS_CLUSTER
from iris.relay.tunnel import RelayTunnel
from iris.runtime.eager_io import EagerReader, Flusher, Outbox
from iris.runtime.handler_queue import HandlerQueue
from iris.runtime.survey import SurveyResult

log = logging.getLogger("iris.relay.client")

MAX_QUEUED_BYTES = 64 * 1024 * 1024  # written to the node and not yet taken by the kernel
# Events of a topic (or broadcasts) waiting for a slow handler; beyond, they are dropped.
MAX_QUEUED_MESSAGES = 10_000

EventHandler = Callable[[bytes], Awaitable[None]]


class RelayStream:
    """One relay connection after the Init exchange: packets in, bytes out."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = rp.NodeReader()
        self.packets: deque[object] = deque()

    @classmethod
    async def connect(cls, port: int = 55555, cluster: str = "",
                      host: str = "127.0.0.1") -> RelayStream:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise IrisError(f"no node relay on {host}:{port} ({exc.strerror or exc})") from None
        relay = cls(stream)
        await stream.send_all(rp.Init.pack(cluster=cluster))
        answer = await relay.read()
        if isinstance(answer, rp.Deny):
            raise IrisError(f"the node refused: {answer.reason}")
        if not isinstance(answer, rp.NodeInit):
            raise IrisError(f"unexpected answer {answer!r}")
        return relay

    async def read(self) -> object:
        while not self.packets:
            data = await self.stream.receive_some(65536)
            if not data:
                raise IrisError("the node closed the connection")
            self.packets.extend(self.reader.feed(data))
            if self.reader.error is not None and not self.packets:
                raise IrisError(f"the node broke the protocol: {self.reader.error}")
        return self.packets.popleft()


class RelayClient:
    """See the module docstring. Obtain one with `RelayClient.open`."""

    def __init__(self, relay: RelayStream, handler: Any, max_concurrency: int) -> None:
        self._relay = relay
        self._nursery: trio.Nursery | None = None  # the connection's own tasks
        self._handler = handler
        self._flusher = Flusher()
        self._outbox = Outbox(relay.stream, self._flusher, MAX_QUEUED_BYTES)
        self._waiting: dict[int, list[Any]] = {}  # request id -> [event, NodeReply or None]
        self._next_id = 0
        self._serving = trio.Semaphore(max_concurrency)
        self._topics: dict[str, HandlerQueue] = {}
        self._broadcasts: HandlerQueue | None = None
        if handler is not None and hasattr(handler, "handle_broadcast"):
            self._broadcasts = HandlerQueue(handler.handle_broadcast, "handle_broadcast")
        self._tunnels: dict[int, RelayTunnel] = {}
        self._opening: dict[int, list[Any]] = {}  # TunInit id -> [event, RelayTunnel or None]
        self._closed: str | None = None
        self._closing = False  # this client sent Close
        self._ended_event = trio.Event()
        self.messages_dropped = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int = 55555, cluster: str = "", handler: Any = None,
                   host: str = "127.0.0.1",
                   max_concurrency: int = 64) -> AsyncIterator[RelayClient]:
        """Connect to a node's relay; with `cluster`, as a member of it served by `handler`
        (an object with `async handle_request(bytes) -> bytes` and/or `async
        handle_broadcast(bytes)`). Leaving the block closes the connection."""
        if cluster and handler is None:
            raise ValueError("a member connection needs a handler")
        relay = await RelayStream.connect(port, cluster, host)
        client = cls(relay, handler, max_concurrency)
        body_error: BaseException | None = None
        async with trio.open_nursery() as outer:
            await outer.start(client._run)
            try:
                yield client
            except BaseException as exc:  # re-raised below, outside the nursery's group
                body_error = exc
            finally:
                with trio.CancelScope(shield=True):
                    await client._close()
                outer.cancel_scope.cancel()
        if body_error is not None:
            raise body_error

    async def _run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The connection's tasks; they stop when it ends, the caller's block goes on (and
        gets ClosedError from then on)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._flusher.run)
            nursery.start_soon(self._write)
            nursery.start_soon(self._read)
            if self._broadcasts is not None:
                nursery.start_soon(self._broadcasts.run)
            task_status.started()

    # ------------------------------------------------------------------------- the API
    async def request(
        self, cluster: str, data: bytes,
        timeout: float = 5.0,  # noqa: ASYNC109 - the request's own deadline, sent to the node
    ) -> bytes:
        """Ask one member of `cluster`; RemoteError, TimeoutError or ClosedError otherwise
        (LimitExceededError, before anything is sent, for more than the overlay carries).
        `timeout` defaults as the node's own `request` does."""
        check_payload(data, "request")
        ms = _milliseconds(timeout)  # the node answers timed-out itself when the time is up
        reply: rp.NodeReply | None = await self._exchange(
            self._waiting, lambda rid: rp.Request.pack(rid, cluster, data, ms))
        if reply is None:
            raise ClosedError(f"relay connection closed: {self._closed}")
        if reply.timed_out:
            raise TimeoutError("request timed out")
        if not reply.success:
            raise RemoteError(reply.fault)
        return reply.reply

    async def broadcast(self, cluster: str, data: bytes) -> None:
        """LimitExceededError, before anything is sent, for more than the overlay carries (the
        node would have to close the connection: the protocol has no answer to a broadcast)."""
        check_payload(data, "broadcast")
        self._send(rp.Broadcast.pack(cluster, data))

    async def publish(self, topic: str, data: bytes) -> None:
        """LimitExceededError, before anything is sent, as for `broadcast`."""
        check_payload(data, "event")
        self._send(rp.Publish.pack(topic, data))

    async def subscribe(self, topic: str, handler: EventHandler) -> None:
        """Call `handler` with each event of `topic`, one at a time, in order."""
        if topic in self._topics:
            raise ValueError(f"already subscribed to {topic!r}")
        self._send(rp.Subscribe.pack(topic))
        sub = self._topics[topic] = HandlerQueue(handler, f"the event handler of {topic!r}")
        assert self._nursery is not None
        self._nursery.start_soon(sub.run)

    async def unsubscribe(self, topic: str) -> None:
        sub = self._topics.pop(topic, None)
        if sub is not None:
            sub.stop()
            self._send(rp.Unsubscribe.pack(topic))

    async def tunnel(
        self, cluster: str,
        timeout: float = 5.0,  # noqa: ASYNC109 - the opening's own deadline, sent to the node
    ) -> RelayTunnel:
        """Open a tunnel to one member of `cluster` (never one on this client's own node)."""
        ms = _milliseconds(timeout)
        tunnel: RelayTunnel | None = await self._exchange(
            self._opening, lambda tid: rp.TunInit.pack(tid, cluster, ms))
        if self._closed is not None:
            raise ClosedError(f"relay connection closed: {self._closed}")
        if tunnel is None:
            raise TimeoutError(f"no tunnel to {cluster!r}: refused or timed out")
        return tunnel

    async def survey(
        self, cluster: str, data: bytes,
        timeout: float = 5.0,  # noqa: ASYNC109 - the survey's own deadline, sent to the node
    ) -> SurveyResult:
        """Ask every member of `cluster` through the node (this project's relay extension,
        `iris.relay.survey`): as `Node.survey`."""
        try:
            reply = await self.request(relay_survey.SURVEY_CLUSTER,
                                       relay_survey.question(cluster, data), timeout)
        except RemoteError as exc:
            raise relay_survey.error_of(exc) from None
        return relay_survey.decode_result(reply)

    async def status(self) -> dict[str, Any]:
        """The node's own view: id, peers, leaf set, table fill, clusters, topics, counters."""
        status: dict[str, Any] = json.loads(await self.request(STATUS_CLUSTER, b"", timeout=5.0))
        return status

    async def wait_closed(self) -> str:
        """Return once the connection ended, with the reason."""
        await self._ended_event.wait()
        assert self._closed is not None
        return self._closed

    # -------------------------------------------------------------------- internals
    async def _exchange(self, pending: dict[int, list[Any]], packet: Callable[[int], bytes]) -> Any:
        """Send the packet made for a fresh id and wait for the node's answer to it (what the
        reader puts in the slot; None if the connection ended first)."""
        self._next_id += 1
        ident = self._next_id
        slot = pending[ident] = [trio.Event(), None]
        try:
            self._send(packet(ident))
            await slot[0].wait()
        finally:
            pending.pop(ident, None)
        return slot[1]

    def _send(self, packet: bytes) -> None:
        if self._closed is not None:
            raise ClosedError(f"relay connection closed: {self._closed}")
        with self._flusher.batch():  # written now: callers are not kept waiting for a task
            if not self._outbox.push(packet):
                raise IrisError("the node does not take what this client writes: too much queued")

    async def _write(self) -> None:
        try:
            await self._outbox.run_writer()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._ended(f"connection lost ({exc})")

    async def _read(self) -> None:
        relay, incoming = self._relay, EagerReader(self._relay.stream)
        reason = "the node closed the connection"
        try:
            while True:
                data = await incoming.receive()
                if not data:
                    break
                packets = relay.reader.feed(data)
                with self._flusher.batch():
                    for packet in packets:
                        if self._dispatch(packet):
                            return
                if relay.reader.error is not None:
                    reason = f"the node broke the protocol: {relay.reader.error}"
                    break
        except IrisError as exc:  # the node broke a tunnel's rules
            reason = f"the node broke the protocol: {exc}"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = f"connection lost ({exc})"
        self._ended(reason)

    def _dispatch(self, packet: rp.NodePacket) -> bool:
        """Act on one packet; True once the node closed the connection."""
        return _NODE_PACKETS[type(packet)](self, packet) is True

    def _on_reply(self, packet: rp.NodeReply) -> None:
        slot = self._waiting.get(packet.id)
        if slot is not None:
            slot[1] = packet
            slot[0].set()

    def _on_request(self, packet: rp.NodeRequest) -> None:
        assert self._nursery is not None
        deadline = trio.current_time() + packet.timeout_ms / 1000  # the caller's time left
        self._nursery.start_soon(self._serve, packet, deadline)

    def _on_broadcast(self, packet: rp.NodeBroadcast) -> None:
        self._offer(self._broadcasts, packet.message)

    def _on_publish(self, packet: rp.Publish) -> None:
        self._offer(self._topics.get(packet.topic), packet.event)

    def _on_close(self, packet: rp.NodeClose) -> bool:
        closer = "closed by this client" if self._closing else "closed by the node"
        self._ended(packet.reason or closer)
        return True

    def _on_tun_transfer(self, packet: rp.TunTransfer) -> None:
        tunnel = self._tunnels.get(packet.tunnel_id)
        if tunnel is not None:
            tunnel.chunk(packet.size, packet.chunk)

    def _on_tun_allow(self, packet: rp.TunAllow) -> None:
        tunnel = self._tunnels.get(packet.tunnel_id)
        if tunnel is not None:
            tunnel.allowed(packet.space)

    def _on_tun_confirm(self, packet: rp.NodeTunConfirm) -> None:
        slot = self._opening.get(packet.id)
        if slot is not None:
            if not packet.timed_out:  # registered now: its TunAllow may follow in this read
                slot[1] = self._tunnels[packet.id] = self._new_tunnel(packet.id,
                                                                      packet.chunk_limit)
            slot[0].set()

    def _on_tun_close(self, packet: rp.NodeTunClose) -> None:
        tunnel = self._tunnels.pop(packet.tunnel_id, None)
        if tunnel is not None:
            tunnel.ended(packet.reason or "closed")

    def _on_unexpected(self, packet: rp.NodePacket) -> None:
        """An Init or Deny after the handshake: nothing to act on."""

    def _new_tunnel(self, tid: int, chunk_limit: int) -> RelayTunnel:
        tunnel = RelayTunnel(self._send, tid, chunk_limit)
        self._send(rp.TunAllow.pack(tid, TUNNEL_WINDOW))
        return tunnel

    def _accept_tunnel(self, packet: rp.NodeTunInit) -> None:
        """A tunnel to our cluster: confirm it with an id of ours and hand it to the handler
        (refused at once when the handler takes no tunnels)."""
        self._next_id += 1
        tid = self._next_id
        self._send(rp.TunConfirm.pack(packet.build_id, tid))
        if not hasattr(self._handler, "handle_tunnel"):
            self._send(rp.TunClose.pack(tid))
            return
        tunnel = self._tunnels[tid] = self._new_tunnel(tid, packet.chunk_limit)
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_tunnel, tunnel)

    async def _serve_tunnel(self, tunnel: RelayTunnel) -> None:
        try:
            await self._handler.handle_tunnel(tunnel)
        except Exception:  # closes this tunnel, not the connection
            log.exception("handle_tunnel raised")
        finally:
            if self._closed is None:
                await tunnel.close()

    def _offer(self, queue: HandlerQueue | None, data: bytes) -> None:
        if queue is None:
            return
        if len(queue) >= MAX_QUEUED_MESSAGES:
            self.messages_dropped += 1
        else:
            queue.put(data)

    def _ended(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        for slot in (*self._waiting.values(), *self._opening.values()):
            slot[0].set()  # no answer: ClosedError
        tunnels, self._tunnels = self._tunnels, {}
        for tunnel in tunnels.values():
            tunnel.ended(reason)
        self._ended_event.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _serve(self, packet: rp.NodeRequest, deadline: float) -> None:
        async with self._serving:
            if trio.current_time() >= deadline:
                return  # it waited for a free slot past its caller's deadline: nobody waits
                # for the answer any more (the node has answered timed-out), so it is not run
            try:
                if not hasattr(self._handler, "handle_request"):
                    raise IrisError("this client serves no requests")
                reply = await self._handler.handle_request(packet.request)
                check_payload(reply, "reply")  # the caller gets the reason, not a closed link
                answer = rp.Reply.pack(packet.id, True, bytes(reply))
            except Exception as exc:  # the caller gets the text as a remote error
                answer = rp.Reply.pack(packet.id, False, fault=str(exc) or type(exc).__name__)
        if self._closed is None:
            self._send(answer)

    async def _close(self) -> None:
        if self._closed is None:
            self._closing = True
            self._outbox.push(rp.Close.pack())
            self._flusher.flush()
            with trio.move_on_after(1.0):  # the node answers Close with Close
                await self._ended_event.wait()
            self._ended("closed by this client")
        await trio.aclose_forcefully(self._relay.stream)


def _milliseconds(timeout: float) -> int:
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    return max(1, round(timeout * 1000))


_NODE_PACKETS: dict[type, Callable[[RelayClient, Any], bool | None]] = {
    rp.NodeReply: RelayClient._on_reply,
    rp.NodeRequest: RelayClient._on_request,
    rp.NodeBroadcast: RelayClient._on_broadcast,
    rp.Publish: RelayClient._on_publish,
    rp.NodeClose: RelayClient._on_close,
    rp.TunTransfer: RelayClient._on_tun_transfer,
    rp.TunAllow: RelayClient._on_tun_allow,
    rp.NodeTunConfirm: RelayClient._on_tun_confirm,
    rp.NodeTunClose: RelayClient._on_tun_close,
    rp.NodeTunInit: RelayClient._accept_tunnel,
    rp.NodeInit: RelayClient._on_unexpected,
    rp.Deny: RelayClient._on_unexpected,
}
"""What the client does with each packet of the node (True: the connection is over)."""
