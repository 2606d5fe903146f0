"""A relay tunnel's two pumps at the node: the client's whole messages onto the overlay tunnel,
the overlay tunnel's messages to the client, each waiting on its own side (room on the overlay
tunnel, credit from the client); the rules about what may move live in the session."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from iris.errors import ClosedError, IrisError
from iris.relay.session import RelaySession
from iris.runtime.tunnel import Tunnel


class Carrier:
    """Moves one established tunnel's messages between the overlay tunnel and the session:
    the client's whole messages onto the overlay tunnel in order (waiting while it has no
    room), the overlay's messages to the session (waiting while the client's credit is out)."""

    def __init__(self, session: RelaySession, write_out: Callable[[], None], tid: int,
                 handle: Tunnel, done: Callable[[Carrier], None]) -> None:
        self.session, self.write_out, self.tid, self.handle = session, write_out, tid, handle
        self.done = done  # told when the carrier stops (the tunnel is then closed)
        self.queue: deque[bytes] = deque()  # whole messages from the client, for the overlay
        self.queued = trio.Event()
        self.resume = trio.Event()
        self.scope = trio.CancelScope()

    def send(self, data: bytes) -> None:
        """Straight onto the overlay tunnel while it has room and nothing waits before."""
        if not self.queue:
            try:
                sent = self.handle.send_nowait(data)
            except ClosedError:
                sent = False  # _to_overlay finds out, and the client hears
            if sent:
                self.session.tunnel_sent(self.tid, self.handle, len(data))
                return
        self.queue.append(data)
        self.queued.set()

    async def _to_overlay(self) -> None:
        session = self.session
        while True:
            while not self.queue:
                self.queued = trio.Event()
                await self.queued.wait()
            data = self.queue[0]
            await self.handle.send(data)
            self.queue.popleft()
            session.tunnel_sent(self.tid, self.handle, len(data))
            session.return_credit()  # the client may send more
            self.write_out()

    async def _to_client(self) -> None:
        session = self.session
        while True:
            try:
                data = await self.handle.receive()
            except ClosedError as exc:
                session.tunnel_ended(self.tid, self.handle, str(exc))
                self.write_out()
                return
            self.resume = trio.Event()
            held = not session.to_client(self.tid, data)
            self.write_out()
            if held:
                await self.resume.wait()

    async def run(self) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._to_overlay)
                    await self._to_client()
                    nursery.cancel_scope.cancel()
        except* (ClosedError, IrisError):  # (a nursery raises them as a group)
            self.session.tunnel_ended(self.tid, self.handle, "tunnel closed")
            self.write_out()
        finally:
            self.done(self)
            with trio.CancelScope(shield=True):
                await self.handle.close()
