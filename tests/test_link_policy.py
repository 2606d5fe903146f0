"""The link policy (overlay.link_policy): which frames go ahead on a link."""

import contextlib
import inspect
import sys
import time

import pytest

import iris.core.messages
import overlay.messages
from iris.runtime.transport import abort_on_close, stalled, unacknowledged
from overlay.link_policy import BULK, CONTROL, PRIORITY_OF, LinkPolicy
from overlay.wire import Message


def message_classes(module):
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Message) and cls.__module__ == module.__name__]


INTENDED = {
    "Heartbeat": CONTROL, "Ping": CONTROL, "Pong": CONTROL, "Departed": CONTROL,
    "RowRequest": CONTROL, "RowReply": CONTROL, "JoinRequest": CONTROL, "JoinReply": CONTROL,
    "Hello": CONTROL, "Leave": CONTROL, "RouteAck": CONTROL, "Addresses": CONTROL,
    "Route": BULK, "Direct": BULK, "Lookup": BULK,
    "LinkClose": BULK,  # the last frame on its link: behind every other one
}


def test_every_overlay_message_has_its_own_entry():
    """A new overlay message must be given a priority on purpose, not fall to the default."""
    assert set(PRIORITY_OF) == set(message_classes(overlay.messages))


@pytest.mark.parametrize("cls", message_classes(overlay.messages), ids=lambda cls: cls.__name__)
def test_overlay_messages_get_the_intended_priority(cls):
    msg = cls(*(None for _ in cls.SPEC))  # the policy looks at the class only
    assert LinkPolicy().priority(msg) is INTENDED[cls.__name__]


@pytest.mark.parametrize("cls", message_classes(iris.core.messages), ids=lambda cls: cls.__name__)
def test_messaging_layer_messages_are_bulk(cls):
    msg = cls(*(None for _ in cls.SPEC))
    assert LinkPolicy().priority(msg) is BULK


def test_a_routed_control_message_is_bulk():
    """What a route carries travels as the route does: in turn with the other routed traffic."""
    routed = overlay.messages.Route(1, 2, 3, 0, overlay.messages.Ping(1, False, True))
    assert LinkPolicy().priority(routed) is BULK


# ------------------------------------------------------------------------- link liveness
@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_the_connection_to_a_peer_declared_failed_closes_and_the_next_frame_dials_anew(
        transport):
    """The overlay declares a peer failed: the runtime closes that connection at once (a
    stalled TCP connection kept in use delivers old frames late after a partition heals), and
    traffic to the peer goes over a fresh one."""
    from iris.testing import local_nodes, wait_until
    from overlay.probes import P_NEIGHBOUR

    async with local_nodes(3, transport=transport) as nodes:
        a, b = nodes[0]._runtime, nodes[1]._runtime
        await wait_until(lambda: b.node_id in a.links and a.links[b.node_id].reading is not None)
        old = a.links[b.node_id]
        a.call(lambda: a.node._declare_failed(b.node_id, P_NEIGHBOUR))
        assert old.closed and a.links.get(b.node_id) is not old
        assert a.counters["links_closed_peer_gone"] == 1
        # B is alive: the overlay's retry of lost peers takes it back, over a new connection.
        await wait_until(lambda: b.node_id in a.node.leaf.members())
        await nodes[1].register("svc", Echo())
        reply = await nodes[0].request("svc", b"again", timeout=10)
        assert reply == b"again"
        await wait_until(lambda: b.node_id in a.links and a.links[b.node_id] is not old)


class Echo:
    async def handle_request(self, data):
        return data


async def test_tcp_links_get_keep_alive_and_a_user_timeout():
    """Where the OS has them: TCP keep-alive on idle links, and TCP_USER_TIMEOUT so that data
    unacknowledged for the policy's bound ends the connection."""
    import socket

    import trio

    from iris.runtime.transport import tune

    policy = LinkPolicy()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        tune(stream, policy)
        sock = stream.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == round(
                policy.user_timeout_s * 1000)
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == round(
                policy.keepalive_idle_s)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == policy.keepalive_count
    finally:
        await stream.aclose()
        for listener in listeners:
            await listener.aclose()


def filled_tcp_pair():
    """A TCP connection whose receiving end does not read, written to until the sender's
    kernel takes no more: what it holds then is unacknowledged (the receiver's window is
    shut), as across a cut."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname(), timeout=5)
    receiver, _ = listener.accept()
    listener.close()
    assert unacknowledged(sender) == 0  # nothing written yet
    sender.setblocking(False)
    written = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            written += sender.send(b"x" * 65536)
    held, deadline = -1, time.monotonic() + 5.0
    while unacknowledged(sender) != held and time.monotonic() < deadline:
        held = unacknowledged(sender)  # the receiver's last acknowledgements still arrive
        time.sleep(0.1)
    return sender, receiver, written


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIOCOUTQ is Linux's")
def test_an_aborted_connection_never_delivers_what_its_peer_had_not_acknowledged():
    """The kernel tells what the peer has not acknowledged; an abortive close discards it
    (RST), where an orderly one would deliver it once the peer reads again."""
    sender, receiver, written = filled_tcp_pair()
    try:
        held = unacknowledged(sender)
        assert 0 < held <= written
        abort_on_close(sender)
        sender.close()
        receiver.settimeout(5)
        got = 0
        with pytest.raises(ConnectionResetError):
            while chunk := receiver.recv(1 << 20):
                got += len(chunk)
        assert got <= written - held  # only what its kernel had acknowledged
    finally:
        receiver.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIOCOUTQ is Linux's")
async def test_a_link_is_stalled_once_the_kernel_waited_a_timeout_for_the_peer():
    """Bytes the peer has not acknowledged past a retransmission timeout (here, its receive
    window shut) make a stall; bytes in flight on a live connection do not."""
    import trio

    from iris.runtime.backpressure import Backpressure
    from iris.runtime.driver import Link, Runtime
    from iris.testing import wait_until

    sender, receiver, _ = filled_tcp_pair()
    try:
        link = Link(1, Backpressure())
        assert not Runtime._stalled(link)  # no socket (dialing, or a memory stream), no frames
        link.socket = sender
        with trio.fail_after(5):  # the first probe of the shut window goes after ~0.2-1 s
            await wait_until(lambda: Runtime._stalled(link))
        receiver.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while receiver.recv(1 << 20):  # the peer reads again: everything is acknowledged
                pass
        with trio.fail_after(5):
            await wait_until(lambda: not stalled(sender))
    finally:
        sender.close()
        receiver.close()
    assert unacknowledged(None) == 0 and not stalled(None)


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_a_link_still_holding_a_hop_given_up_is_reset_and_the_next_frame_dials_anew(
        transport):
    """A hop to the peer was given up (and sent another way): a link that delivered
    everything is kept, one that still holds frames is reset, so they are never delivered
    after their copies that went another way."""
    from iris.testing import local_nodes, wait_until
    from overlay.messages import Ping
    from overlay.wire import encode

    async with local_nodes(2, transport=transport) as nodes:
        a, b = nodes[0]._runtime, nodes[1]._runtime
        await nodes[1].register("svc", Echo())
        await wait_until(lambda: b.node_id in a.links and a.links[b.node_id].reading is not None)
        link = a.links[b.node_id]
        await link.flushed()
        a.call(lambda: a.node.given_up.append(b.node_id))
        assert a.links.get(b.node_id) is link and "links_reset_stalled_hop" not in a.counters
        link.queue.push(encode(Ping(1, False, True)), False)  # not taken yet, as when stalled
        a.call(lambda: a.node.given_up.append(b.node_id))
        assert link.closed and a.links.get(b.node_id) is not link
        assert a.counters["links_reset_stalled_hop"] == 1
        assert await nodes[0].request("svc", b"again", timeout=10) == b"again"


async def test_a_peer_resetting_the_connection_during_the_handshake_fails_only_that_link():
    """Closing links makes redials common, to peers that may be going away: one that resets
    the connection while the handshake is written must cost that link, never the node."""
    import trio

    from iris.runtime.transport import MemoryNetwork
    from iris.testing import local_nodes, wait_until
    from overlay.messages import Ping

    class Resetting(trio.abc.Stream):
        async def send_all(self, data):
            raise trio.BrokenResourceError("connection reset by peer")

        async def wait_send_all_might_not_block(self):
            pass

        async def receive_some(self, max_bytes=None):
            await trio.sleep_forever()

        async def aclose(self):
            pass

    class ResettingTransport:
        def __init__(self, real):
            self.real = real

        async def listen(self, *args):
            return await self.real.listen(*args)

        async def connect(self, host, port):
            return Resetting()

    async with local_nodes(2) as nodes:
        runtime = nodes[0]._runtime
        runtime.transport = ResettingTransport(MemoryNetwork().transport())
        ghost = 12345
        runtime.directory[ghost] = ("10.0.0.9", 7000)
        runtime._send(ghost, Ping(1, False, True))  # dials: the handshake write is reset
        await wait_until(lambda: ghost not in runtime.links)  # the link went, alone
        await nodes[1].register("svc", Echo())  # and the node serves on
        assert await nodes[0].request("svc", b"alive", timeout=10) == b"alive"


async def test_a_link_whose_write_is_not_taken_for_the_bound_is_closed():
    """A connection that stops taking what is written to it (the peer stopped acknowledging
    and the send buffer is full) is closed once the write has waited `stall_s`."""
    import trio

    from iris.testing import local_nodes, wait_until
    from overlay.messages import Ping

    class Stalling(trio.abc.Stream):
        """A connection that stops taking writes once `stalled` is set."""

        def __init__(self, inner):
            self.inner, self.stalled = inner, False

        async def send_all(self, data):
            if self.stalled:
                await trio.sleep_forever()
            await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self):
            await self.inner.wait_send_all_might_not_block()

        async def receive_some(self, max_bytes=None):
            return await self.inner.receive_some(max_bytes)

        async def aclose(self):
            await self.inner.aclose()

    async with local_nodes(2) as nodes:
        a, b = nodes[1]._runtime, nodes[0]._runtime
        real, streams = a.transport, []

        class Transport:
            async def listen(self, *args):
                return await real.listen(*args)

            async def connect(self, host, port):
                stream = Stalling(await real.connect(host, port))
                streams.append(stream)
                return stream

        a.transport = Transport()
        real.close_listener(a.host, a.port)  # only a dials: its links to b are stalling ones
        a.link_policy.stall_s = 0.2
        old = a.links.pop(b.node_id)  # the next frame to b dials through the stalling transport
        a._close_link(old, "links_closed_for_the_test")
        await nodes[0].register("svc", Echo())

        def stall_the_link_to_b():
            """Stall a's open link to b and write to it. b may close a link meanwhile (it
            cannot dial a, and may declare it failed): the next one gets the same."""
            if a.counters.get("links_closed_stalled"):
                return True
            link = a.links.get(b.node_id)
            if link is None or (link.session is not None and link.stream is streams[-1]
                                and not streams[-1].stalled):
                if link is not None:
                    streams[-1].stalled = True
                a.call(lambda: a._send(b.node_id, Ping(1, False, True)))
            return False

        await wait_until(stall_the_link_to_b)
