"""The relay protocol v1.0-draft2, spoken by a client written here from the protocol's
description (it does not use the server's encoder).

Longer than 500 lines because every test here needs that independent client and the running
relay fixture defined at the top; the relay's rules without sockets are tested in
test_relay_session.py."""

import gc
import json
import logging
import socket
import subprocess
import sys
import weakref
from dataclasses import replace
from functools import partial

import pytest
import trio
import trio.testing
from conftest import retry, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

import iris
import iris.testing
from iris.core import cluster_group
from iris.relay import protocol as rp
from iris.relay.server import RelayServer
from iris.runtime.log_limit import LogLimit

# ---------------------------------------------------------------- a client from the spec


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def blob(b: bytes) -> bytes:
    return uvarint(len(b)) + b


def text(s: str) -> bytes:
    return blob(s.encode())


def init(cluster: str = "", magic: str = "iris-client-magic",
         version: str = "v1.0-draft2") -> bytes:
    return b"\x00" + text(magic) + text(version) + text(cluster)


class Client:
    def __init__(self, stream):
        self.stream = stream
        self.buf = b""

    @classmethod
    async def connect(cls, port, cluster=""):
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.send(init(cluster))
        op, fields = await client.read()
        assert (op, fields) == (0x00, ["iris-relay-magic", "v1.0-draft2"])
        return client

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self):
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError
        self.buf += data

    async def _byte(self):
        while not self.buf:
            await self._more()
        b, self.buf = self.buf[0], self.buf[1:]
        return b

    async def _varint(self):
        n = shift = 0
        while True:
            b = await self._byte()
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    async def _blob(self):
        size = await self._varint()
        while len(self.buf) < size:
            await self._more()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    async def _text(self):
        return (await self._blob()).decode()

    async def read(self):
        op = await self._byte()
        if op in (0x00, 0x01):  # Init / Deny: magic + version or reason
            return op, [await self._text(), await self._text()]
        if op == 0x02:
            return op, [await self._text()]
        if op == 0x03:
            return op, [await self._blob()]
        if op == 0x04:
            return op, [await self._varint(), await self._blob(), await self._varint()]
        if op == 0x05:
            rid, timed_out = await self._varint(), await self._byte()
            if timed_out:
                return op, [rid, True]
            success = await self._byte()
            outcome = await self._blob() if success else await self._text()
            return op, [rid, False, bool(success), outcome]
        if op == 0x08:
            return op, [await self._text(), await self._blob()]
        if op == 0x09:  # TunInit: build id, chunk limit
            return op, [await self._varint(), await self._varint()]
        if op == 0x0A:  # TunConfirm: id, timed out, chunk limit
            rid, timed_out = await self._varint(), await self._byte()
            return op, [rid, True] if timed_out else [rid, False, await self._varint()]
        if op == 0x0B:  # TunAllow
            return op, [await self._varint(), await self._varint()]
        if op == 0x0C:  # TunTransfer
            return op, [await self._varint(), await self._varint(), await self._blob()]
        if op == 0x0D:  # TunClose
            return op, [await self._varint(), await self._text()]
        raise AssertionError(f"unexpected opcode {op}")

    async def read_message(self, tunnel_id, credit_back=True):
        """One whole tunnel message (first chunk carries the size), granting credit back."""
        data = b"".join(chunk for _, chunk in await self.read_chunks(tunnel_id))
        if credit_back:
            await self.send(b"\x0b" + uvarint(tunnel_id) + uvarint(len(data)))
        return data

    async def read_chunks(self, tunnel_id):
        """The (size field, payload) of each TunTransfer of one whole tunnel message: the
        first carries the message's size, the later ones 0."""
        op, (tid, size, chunk) = await self.read_skipping_allow()
        assert op == 0x0C and tid == tunnel_id and size > 0
        chunks = [(size, chunk)]
        while sum(len(c) for _, c in chunks) < size:
            op, (tid, zero, chunk) = await self.read_skipping_allow()
            assert op == 0x0C and tid == tunnel_id and zero == 0
            chunks.append((zero, chunk))
        assert sum(len(c) for _, c in chunks) == size
        return chunks

    async def nothing_arrives(self, seconds=0.5):
        """A bounded negative check: True if the node sends this client nothing (and nothing
        is left unread) within `seconds` (a cancelled receive loses no bytes)."""
        with trio.move_on_after(seconds):
            await self._more()
        return not self.buf

    async def read_skipping_allow(self):
        while True:
            op, fields = await self.read()
            if op != 0x0B:
                return op, fields

    async def closed(self):
        """True once the node closed the connection (after whatever it sent)."""
        with trio.fail_after(5):
            try:
                while True:
                    await self._more()
            except (EOFError, trio.BrokenResourceError):
                return True


def request(rid, cluster, data, timeout_ms):
    return b"\x04" + uvarint(rid) + text(cluster) + blob(data) + uvarint(timeout_ms)


def reply_ok(rid, data):
    return b"\x05" + uvarint(rid) + b"\x01" + blob(data)


def reply_fault(rid, fault):
    return b"\x05" + uvarint(rid) + b"\x00" + text(fault)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture
async def relay(nursery):
    async with iris.testing.local_nodes(3) as nodes:
        server = RelayServer(nodes[0])
        port = await nursery.start(server.serve, 0, ("127.0.0.1",))
        yield port, nodes, server


# ---------------------------------------------------------------------------- protocol
async def test_request_reply_through_the_relay(relay):
    port, nodes, _ = relay
    member = await Client.connect(port, cluster="svc")
    caller = await Client.connect(port)
    await caller.send(request(7, "svc", b"hello", 2000))
    op, (rid, data, timeout) = await member.read()
    assert op == 0x04 and data == b"hello" and timeout > 0
    await member.send(reply_ok(rid, b"world"))
    assert await caller.read() == (0x05, [7, False, True, b"world"])
    # and a remote fault comes back as a fault
    await caller.send(request(8, "svc", b"x", 2000))
    _, (rid, _, _) = await member.read()
    await member.send(reply_fault(rid, "nope"))
    assert await caller.read() == (0x05, [8, False, False, "nope"])
    # embedded nodes reach the relay member too
    async def answer():
        _, (rid, data, _) = await member.read()
        await member.send(reply_ok(rid, data.upper()))
    async with trio.open_nursery() as n:
        n.start_soon(answer)
        assert await nodes[2].request("svc", b"abc", timeout=2) == b"ABC"


async def test_a_member_client_is_told_the_time_its_caller_has_left(relay):
    """The Request packet's timeout is the caller's remaining time (the protocol's intent),
    not a fixed allowance: a client can skip work nobody waits for any more."""
    port, _, _ = relay
    member = await Client.connect(port, cluster="timed")
    caller = await Client.connect(port)
    await caller.send(request(1, "timed", b"x", 2000) + request(2, "timed", b"y", 90_000))
    _, (_, data, timeout) = await member.read()
    assert data == b"x" and 1000 < timeout <= 2000
    _, (_, data, timeout) = await member.read()
    assert data == b"y" and timeout == 60_000  # capped by the relay's Limits.serve_timeout_s


async def test_request_timeout_is_reported_by_the_node(relay):
    port, _, _ = relay
    member = await Client.connect(port, cluster="slow")
    caller = await Client.connect(port)
    await caller.send(request(1, "slow", b"x", 200))
    await member.read()  # never answered
    assert await caller.read() == (0x05, [1, True])


async def test_two_connections_share_a_cluster_and_each_gets_every_broadcast(relay):
    port, nodes, _ = relay
    a = await Client.connect(port, cluster="pool")
    b = await Client.connect(port, cluster="pool")
    caller = await Client.connect(port)
    await caller.send(b"\x03" + text("pool") + blob(b"to all"))
    assert await a.read() == (0x03, [b"to all"])
    assert await b.read() == (0x03, [b"to all"])
    served = set()
    for rid in range(1, 5):
        await caller.send(request(rid, "pool", b"r", 2000))
        with trio.move_on_after(0.5):
            op, (mid, _, _) = await a.read()
            served.add("a")
            await a.send(reply_ok(mid, b"a"))
        if len(served) < 2 or rid > len(served):
            with trio.move_on_after(0.5):
                op, (mid, _, _) = await b.read()
                served.add("b")
                await b.send(reply_ok(mid, b"b"))
        await caller.read()
    assert served == {"a", "b"}


async def test_subscribe_publish_unsubscribe(relay):
    port, nodes, _ = relay
    sub = await Client.connect(port)
    await sub.send(b"\x06" + text("news"))
    await wait_until(lambda: nodes[0]._runtime.core.topics)
    pub = await Client.connect(port)
    await pub.send(b"\x08" + text("news") + blob(b"e1"))
    assert await sub.read() == (0x08, ["news", b"e1"])
    await nodes[1].publish("news", b"e2")
    assert await sub.read() == (0x08, ["news", b"e2"])
    await sub.send(b"\x07" + text("news"))
    await wait_until(lambda: not nodes[0]._runtime.core.topics)


async def test_close_is_answered_and_a_departed_member_is_cleaned_up(relay):
    port, nodes, server = relay
    member = await Client.connect(port, cluster="gone")
    await member.send(b"\x02")
    assert await member.read() == (0x02, [""])
    assert await member.closed()
    await wait_until(lambda: not server.members)
    caller = await Client.connect(port)
    await caller.send(request(3, "gone", b"?", 3000))
    op, fields = await caller.read()
    assert op == 0x05 and fields[1] is False and fields[2] is False  # a fault, not a hang


async def test_a_member_that_leaves_or_never_answers_fails_the_request_instead_of_hanging(relay):
    port, _, server = relay
    silent = await Client.connect(port, cluster="silent")
    caller = await Client.connect(port)
    await caller.send(request(1, "silent", b"?", 120_000) + request(2, "silent", b"?", 120_000))
    with trio.fail_after(10):
        assert (await silent.read())[0] == 0x04 and (await silent.read())[0] == 0x04
    # The member's answer time (Limits.serve_timeout_s) runs out for request 1: the caller
    # hears so.
    (conn,) = [c for c in server.connections if c.cluster == "silent"]
    conn.session.expire(conn.session.next_deadline())
    await conn.apply()
    with trio.fail_after(10):
        op, fields = await caller.read()
    assert op == 0x05 and fields[:3] == [1, False, False] and "did not answer" in fields[3]
    # The member leaves with request 2 unanswered: the caller hears at once.
    await silent.stream.aclose()
    with trio.fail_after(10):
        op, fields = await caller.read()
    assert op == 0x05 and fields[:3] == [2, False, False] and "left" in fields[3]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("junk, expected_op", [
    (init(version="v0.9"), 0x01),                    # version mismatch: Deny
    (init(magic="not-iris"), 0x01),                  # bad magic: Deny
    (b"\x7f", 0x01),                                 # unknown opcode before Init
    (init() + b"\x7f", 0x02),                        # unknown opcode: Close with reason
    (init() + b"\x05\x01\x07", 0x02),                # invalid bool
    (init() + b"\x03" + text("c") + uvarint(2**40), 0x02),  # oversized field
    (init() + b"\x08" + text("t") + blob(b"e" * (9 << 20)), 0x02),  # an event over the node's limit
])
async def test_bad_input_gets_a_reason_and_a_closed_connection(relay, junk, expected_op):
    port, nodes, server = relay
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(junk)
    op, fields = await client.read()
    if op == 0x00:  # the Init answer comes first when Init itself was fine
        op, fields = await client.read()
    assert op == expected_op and fields[-1]  # a reason is given
    assert await client.closed()
    assert server.counters["clients_cut_off"] == 1  # what `iris status` shows under "relay"
    other = await Client.connect(port)  # the node carries on
    await other.send(b"\x02")
    assert await other.read() == (0x02, [""])


async def test_a_client_subscribing_beyond_its_limit_is_cut_off(relay):
    port, _, server = relay
    server.limits = replace(server.limits, topics=2)
    client = await Client.connect(port)
    with trio.fail_after(10):
        await client.send(b"".join(b"\x06" + text(f"t{i}") for i in range(3)))
        op, fields = await client.read()
        assert op == 0x02 and "subscriptions" in fields[0]
        assert await client.closed()
    await wait_until(lambda: not server.topics)  # its subscriptions went with it


async def test_a_member_whose_registration_is_not_grafted_in_time_is_denied(relay):
    """The Init of a member connection waits a bounded time for its registration: past it the
    client gets Deny with the reason, and the node keeps no membership of the cluster."""
    port, nodes, server = relay
    # (limits are positive: a microsecond is no time for a registration to graft)
    server.limits = replace(server.limits, join_timeout_s=1e-6)
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    with trio.fail_after(10):
        await client.send(init("late"))
        op, fields = await client.read()
        assert op == 0x01 and "could not join cluster 'late'" in fields[1]
        assert await client.closed()
    assert "late" not in server.members
    assert cluster_group("late") not in nodes[0]._runtime.core.services
    with pytest.raises(iris.NoSuchClusterError):
        await nodes[1].request("late", b"x", timeout=10.0)


async def test_a_client_silent_before_init_or_inside_a_packet_is_closed(relay):
    """Neither a connection that never sends its Init nor one that leaves a packet unfinished
    holds its socket past its deadline; each hears why, and a prompt client is kept."""
    port, _, server = relay
    server.limits = replace(server.limits, init_timeout_s=0.2, packet_timeout_s=0.3)
    silent = Client(await trio.open_tcp_stream("127.0.0.1", port))
    trickling = await Client.connect(port)
    prompt = await Client.connect(port)
    with trio.fail_after(10):
        assert await silent.read() == (0x01, ["iris-relay-magic", "no Init within 0.2 s"])
        assert await silent.closed()
        # (begun after the Init deadlines passed: only the packet's own deadline closes it)
        await trickling.send(b"\x06" + text("topic")[:2])
        assert await trickling.read() == (0x02, ["a packet left unfinished for 0.3 s"])
        assert await trickling.closed()
        await wait_until(lambda: len(server.connections) == 1)
    assert server.counters["init_timeouts"] == server.counters["packet_timeouts"] == 1
    await prompt.send(b"\x02")
    assert await prompt.read() == (0x02, [""])


async def test_connections_beyond_the_limit_are_closed_at_once_and_shown_in_status(relay):
    port, _, server = relay
    server.limits = replace(server.limits, max_connections=2)
    first, second = await Client.connect(port), await Client.connect(port)
    refused = Client(await trio.open_tcp_stream("127.0.0.1", port))
    assert await refused.closed()  # before sending anything: nothing is read from it
    await first.send(request(1, "iris.status", b"", 2000))
    op, (rid, timed_out, success, data) = await first.read()
    assert (op, rid, timed_out, success) == (0x05, 1, False, True)
    relay_status = json.loads(data)["relay"]
    assert relay_status["connections_refused"] == 1 and relay_status["clients"] == 2
    assert relay_status["limits"]["max_connections"] == 2
    await second.send(b"\x02")
    assert await second.read() == (0x02, [""])
    await wait_until(lambda: len(server.connections) == 1)
    third = await Client.connect(port)  # room again once one left
    await third.send(b"\x02")
    assert await third.read() == (0x02, [""])


async def test_a_subscriber_that_never_reads_is_closed_at_once_and_its_queue_freed(relay):
    """Past its output limit the client is not kept (with all that was queued for it) until
    it reads: the connection ends while it still reads nothing."""
    port, _, server = relay
    server.limits = replace(server.limits, out_bytes=200_000)
    subscriber, publisher = await Client.connect(port), await Client.connect(port)
    await subscriber.send(b"\x06" + text("firehose"))
    await wait_until(lambda: "firehose" in server.topics)
    conn = next(c for c in server.connections if "firehose" in c.session.topics)
    outbox = weakref.ref(conn.outbox)
    del conn
    event = b"\x08" + text("firehose") + blob(b"e" * 60_000)
    with trio.fail_after(10):
        while "clients_too_slow" not in server.counters:
            await publisher.send(event)
    await wait_until(lambda: len(server.connections) == 1 and not server.topics)
    await wait_until(lambda: gc.collect() >= 0 and outbox() is None)
    assert await subscriber.closed()
    await publisher.send(b"\x02")  # the others are served on
    assert await publisher.read_skipping_allow() == (0x02, [""])


def test_warnings_are_rate_limited_per_kind_and_count_what_was_left_out(caplog):
    now = [0.0]
    warnings = LogLimit(logging.getLogger("test.log_limit"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.log_limit"):
        for _ in range(3):
            warnings.warning("refused", "refused %s", "a")
        warnings.warning("slow", "slow")  # another kind has its own interval
        now[0] = 9.9
        warnings.warning("refused", "refused %s", "b")
        now[0] = 10.0
        warnings.warning("refused", "refused %s", "c")
        warnings.warning("refused", "refused %s", "d")
        now[0] = 20.0
        warnings.warning("refused", "refused %s", "e")
    assert [r.getMessage() for r in caplog.records] == [
        "refused a", "slow", "refused c (3 more suppressed)", "refused e (1 more suppressed)"]


async def test_refused_connections_warn_once_per_interval(relay, caplog):
    port, _, server = relay
    server.limits = replace(server.limits, max_connections=1)
    now = [0.0]
    server.warnings = LogLimit(server.warnings.logger, 60.0, clock=lambda: now[0])
    kept = await Client.connect(port)

    async def refuse(times):
        for _ in range(times):
            assert await Client(await trio.open_tcp_stream("127.0.0.1", port)).closed()

    with caplog.at_level(logging.WARNING, "iris.relay.server"):
        await refuse(5)
        now[0] = 60.0
        await refuse(1)
    assert server.counters["connections_refused"] == 6 and len(server.connections) == 1
    await kept.send(b"\x02")
    assert await kept.read() == (0x02, [""])
    assert [r.getMessage() for r in caplog.records] == [
        "relay: 1 connections already: refusing one",
        "relay: 1 connections already: refusing one (4 more suppressed)"]


async def test_a_truncated_packet_then_hangup_leaves_the_node_serving(relay):
    port, _, _ = relay
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    await client.send(init()[:5])
    await client.stream.aclose()
    other = await Client.connect(port)
    await other.send(b"\x02")
    assert await other.read() == (0x02, [""])


# ------------------------------------------------------------------ two node processes
def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def start_process(command):
    return await trio.lowlevel.open_process(command, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)


async def stop_process(proc):
    """SIGTERM (a node leaves the ring), and SIGKILL if that does not end it."""
    proc.terminate()
    with trio.move_on_after(10):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_two_node_processes_serve_a_relay_client_from_a_relay_service(tmp_path):
    key_file = tmp_path / "k"
    key_file.write_bytes(iris.generate_network_key())
    ports = [free_port() for _ in range(4)]
    cli = [sys.executable, "-m", "iris.cli", "node", "--network-key-file", str(key_file)]
    first = await start_process(
        cli + ["--listen", f"127.0.0.1:{ports[0]}", "--relay-port", str(ports[1])])
    second = await start_process(
        cli + ["--listen", f"127.0.0.1:{ports[2]}", "--relay-port", str(ports[3]),
               "--seed", f"127.0.0.1:{ports[0]}"])
    try:
        with trio.fail_after(30):  # the relays listen once their nodes are up
            member = await retry(lambda: Client.connect(ports[1], "svc"), errors=(OSError,))
            caller = await retry(lambda: Client.connect(ports[3]), errors=(OSError,))

        async def ping():
            """A request through the second node's relay, answered by the member if it gets
            there; the fields of the reply the caller gets."""
            await caller.send(request(1, "svc", b"ping", 1000))
            async with trio.open_nursery() as n:
                async def serve():
                    with trio.move_on_after(1.5):
                        _, (rid, data, _) = await member.read()
                        await member.send(reply_ok(rid, data + b"!"))
                n.start_soon(serve)
                _, fields = await caller.read()
            return fields

        # Until the second node has joined and the tree reaches the member.
        with trio.fail_after(30):
            await retry(ping, accept=lambda fields: fields[1:] == [False, True, b"ping!"],
                        pause=0.2)
    finally:
        for proc in (first, second):
            await stop_process(proc)


async def test_cli_client_commands_against_a_running_node(tmp_path):
    key_file = tmp_path / "k"
    key_file.write_bytes(iris.generate_network_key())
    listen, relay_port = free_port(), free_port()
    node = await start_process([sys.executable, "-m", "iris.cli", "node", "--network-key-file",
                                str(key_file), "--listen", f"127.0.0.1:{listen}",
                                "--relay-port", str(relay_port)])
    iris_cli = [sys.executable, "-m", "iris.cli"]
    relay_arg = ["--relay-port", str(relay_port)]
    try:
        async def run(*args, **kw):
            return await trio.run_process(iris_cli + list(args) + relay_arg, capture_stdout=True,
                                          capture_stderr=True, check=False, **kw)

        with trio.fail_after(30):  # the node's relay answers once the node is up
            status = await retry(lambda: run("status"),
                                 accept=lambda result: result.returncode == 0, pause=0.2)
        status = status.stdout.decode()
        assert '"state": "active"' in status
        # iris serve: the reply is the command's stdout for the request on its stdin
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(
                trio.run_process,
                iris_cli + ["serve", "upper", *relay_arg, "--", "tr", "a-z", "A-Z"], check=False))
            with trio.fail_after(30):  # until `iris serve` has registered
                result = await retry(lambda: run("request", "upper", "shout", "--timeout", "2"),
                                     accept=lambda result: result.returncode == 0, pause=0.2)
            assert result.stdout == b"SHOUT\n"
            missing = await run("request", "nobody", "x", "--timeout", "2")
            assert missing.returncode == 1 and b"no members" in missing.stderr
            # subscribe in the background, publish, see the event
            got = trio.Event()
            lines = []

            async def subscriber():
                proc = await trio.lowlevel.open_process(
                    iris_cli + ["subscribe", "news", *relay_arg], stdout=subprocess.PIPE)
                buf = b""
                while b"\n" not in buf:
                    buf += await proc.stdout.receive_some(1024)
                lines.append(buf.split(b"\n")[0])
                got.set()
                proc.kill()
                await proc.wait()

            nursery.start_soon(subscriber)
            with trio.fail_after(30):
                while not got.is_set():
                    await run("publish", "news", "hello")
                    with trio.move_on_after(0.5):
                        await got.wait()
            assert lines == [b"hello"]
            assert (await run("broadcast", "upper", "hi")).returncode == 0
            nursery.cancel_scope.cancel()
    finally:
        await stop_process(node)


def transfer(tunnel_id, data, chunk=65536):
    out = b"\x0c" + uvarint(tunnel_id) + uvarint(len(data)) + blob(data[:chunk])
    for start in range(chunk, len(data), chunk):
        out += b"\x0c" + uvarint(tunnel_id) + uvarint(0) + blob(data[start:start + chunk])
    return out


async def test_tunnel_between_two_relay_clients_with_multichunk_messages(relay):
    with trio.fail_after(20):
        await _tunnel_between_two_relay_clients(relay)


async def _tunnel_between_two_relay_clients(relay):
    port, nodes, _ = relay
    member = await Client.connect(port, cluster="tun")
    # A tunnel's two ends are on two nodes: the opener uses the relay of another node.
    async with trio.open_nursery() as nursery:
        other_port = await nursery.start(RelayServer(nodes[1]).serve, 0, ("127.0.0.1",))
        opener = await Client.connect(other_port)
        await _exchange(member, opener)
        nursery.cancel_scope.cancel()


async def test_tunnel_between_two_clients_of_one_node(relay):
    """Both ends on one node (an existing Iris client library's tunnel tests do this): the
    opening is answered, data goes both ways in many chunks, the close reaches the member."""
    port, _, _ = relay
    with trio.fail_after(20):
        member = await Client.connect(port, cluster="tun")
        opener = await Client.connect(port)
        await _exchange(member, opener)


async def _exchange(member, opener):
    await opener.send(b"\x09" + uvarint(5) + text("tun") + uvarint(3000))
    op, (build_id, limit) = await member.read()
    assert op == 0x09 and limit == 65536
    # the member grants its credit in the same write as its confirmation (as clients do)
    await member.send(b"\x0a" + uvarint(build_id) + uvarint(77)
                      + b"\x0b" + uvarint(77) + uvarint(1 << 20))
    op, fields = await opener.read()
    assert (op, fields) == (0x0A, [5, False, 65536])
    # the node grants each client its window
    await opener.send(b"\x0b" + uvarint(5) + uvarint(1 << 20))
    big = bytes(range(256)) * 800  # 200 KiB: four chunks
    await opener.send(transfer(5, big))
    assert await member.read_message(77) == big
    await member.send(transfer(77, b"and back"))
    assert await opener.read_message(5) == b"and back"
    await opener.send(b"\x0d" + uvarint(5))
    op, (tid, reason) = await member.read_skipping_allow()
    assert op == 0x0D and tid == 77


async def _open_tunnel(relay, nursery):
    """A tunnel from an opener client (relay of node 1) to a member client (relay of node 0):
    returns (member, opener); the member's tunnel id is 77, the opener's 5."""
    port, nodes, _ = relay
    member = await Client.connect(port, cluster="tun")
    other_port = await nursery.start(RelayServer(nodes[1]).serve, 0, ("127.0.0.1",))
    opener = await Client.connect(other_port)
    await opener.send(b"\x09" + uvarint(5) + text("tun") + uvarint(3000))
    op, (build_id, _) = await member.read()
    await member.send(b"\x0a" + uvarint(build_id) + uvarint(77)
                      + b"\x0b" + uvarint(77) + uvarint(1 << 20))
    assert (await opener.read())[0] == 0x0A
    op, (tid, credit) = await opener.read()
    assert (op, tid, credit) == (0x0B, 5, 4 << 20)
    return member, opener


@pytest.mark.parametrize("violation, reason", [
    (b"\x09" + uvarint(5) + text("tun") + uvarint(1000), "already in use"),  # TunInit reusing id 5
    (transfer(5, b"x" * 70_000, chunk=70_000), "chunk limit"),
    (b"\x0c" + uvarint(5) + uvarint(20 << 20) + blob(b"x"), "exceeds"),  # announced size too large
])
async def test_a_tunnel_client_breaking_the_rules_is_cut_off(relay, nursery, violation, reason):
    """Reused tunnel ids, oversized chunks or messages, and data beyond the credit granted:
    the opener's connection is closed with the reason; the member hears its tunnel close."""
    with trio.fail_after(20):
        member, opener = await _open_tunnel(relay, nursery)
        await opener.send(violation)
        while True:
            op, fields = await opener.read()
            if op == 0x02:
                break
        assert reason in fields[0]
        assert await opener.closed()
        while (await member.read())[0] != 0x0D:  # what came before the violation may arrive first
            pass


@pytest.mark.parametrize("timeout_ms", [300, 2000])
async def test_tunnel_to_a_cluster_without_members_is_refused(relay, timeout_ms):
    """TunInit is (id, cluster, timeout ms): the opening fails as timed out within the time
    the client gave it (plus 2 s of slack), not after some allowance of the node's own."""
    port, _, _ = relay
    opener = await Client.connect(port)
    started = trio.current_time()
    await opener.send(b"\x09" + uvarint(9) + text("nobody") + uvarint(timeout_ms))
    with trio.fail_after(10):
        assert await opener.read() == (0x0A, [9, True])
    assert trio.current_time() - started <= timeout_ms / 1000 + 2
    # the connection serves on
    await opener.send(request(1, "iris.status", b"", 2000))
    op, fields = await opener.read()
    assert op == 0x05 and fields[:3] == [1, False, True]


async def _one_node_tunnel(port, member_credit):
    """A tunnel between two clients of ONE node (the relay's port for both): the opener's id
    is 5, the member's 77. The member grants the node `member_credit` bytes with its
    confirmation (none when 0). Returns (member, opener, the chunk limit the node announced
    to the member in TunInit, the one it announced to the opener in TunConfirm); both have
    read the node's TunAllow for the tunnel (asserted to be the 4 MiB window)."""
    member = await Client.connect(port, cluster="tun")
    opener = await Client.connect(port)
    # v1.0-draft2's TunInit from a client: id, cluster, timeout (ms); no chunk limit.
    await opener.send(b"\x09" + uvarint(5) + text("tun") + uvarint(5000))
    op, (build_id, member_limit) = await member.read()
    assert op == 0x09 and member_limit > 0
    confirm = b"\x0a" + uvarint(build_id) + uvarint(77)
    if member_credit:
        confirm += b"\x0b" + uvarint(77) + uvarint(member_credit)
    await member.send(confirm)
    assert await member.read() == (0x0B, [77, 4 << 20])
    op, (tid, timed_out, opener_limit) = await opener.read()
    assert (op, tid, timed_out) == (0x0A, 5, False) and opener_limit > 0
    assert await opener.read() == (0x0B, [5, 4 << 20])
    return member, opener, member_limit, opener_limit


async def test_the_node_sends_a_member_client_no_more_than_its_credit(relay):
    """Credit from the client to the node: a message reaches the client only once its first
    chunk fits the credit the client granted; it then spends its whole size (its later chunks
    go regardless, as in the original relay), and the debt is paid before the next one."""
    port, _, _ = relay
    with trio.fail_after(20):
        member, opener, _, _ = await _one_node_tunnel(port, member_credit=1000)
        await opener.send(transfer(5, b"a" * 600) + transfer(5, b"b" * 5000))
        assert await member.read_message(77, credit_back=False) == b"a" * 600
        # 400 bytes of credit left: nothing of the 5,000-byte message may come
        assert await member.nothing_arrives()
        await member.send(b"\x0b" + uvarint(77) + uvarint(4600))
        assert await member.read_message(77, credit_back=False) == b"b" * 5000
        # A message larger than the chunk: its first chunk fits 70,000, the rest follows
        # on credit; the 30,464 bytes spent beyond the credit are owed.
        await member.send(b"\x0b" + uvarint(77) + uvarint(70_000))
        large = bytes(range(256)) * 400  # 102,400 bytes
        await opener.send(transfer(5, large) + transfer(5, b"c" * 10))
        chunks = await member.read_chunks(77)
        assert b"".join(c for _, c in chunks) == large and len(chunks) == 2
        await member.send(b"\x0b" + uvarint(77) + uvarint(len(large) - 70_000))
        assert await member.nothing_arrives()  # the debt is paid: no credit yet
        await member.send(b"\x0b" + uvarint(77) + uvarint(10))
        assert await member.read_message(77, credit_back=False) == b"c" * 10
        assert await member.nothing_arrives(0.1)


async def test_a_client_sending_beyond_the_nodes_credit_is_cut_off_and_the_member_hears(relay):
    """Credit from the node to the client: the node's TunAllows are what the opener may send.
    The member grants nothing, so the node can pass on only so much (the overlay tunnel's
    window and buffer); an opener that sends regardless, far beyond all the node could ever
    grant it, is closed with the reason, and the member then hears its tunnel close (after
    what the node took within the credit)."""
    port, _, server = relay
    message = b"m" * (1 << 20)
    with trio.fail_after(60):
        member, opener, _, _ = await _one_node_tunnel(port, member_credit=0)
        granted = [4 << 20]  # what the node let the opener send, as the opener heard it

        async def ignore_the_credit():
            try:
                for _ in range(48):  # 48 MiB: well beyond the window plus every buffer
                    await opener.send(transfer(5, message))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the node closed the connection

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ignore_the_credit)
            while True:
                op, fields = await opener.read()
                if op != 0x0B:
                    break
                assert fields[0] == 5
                granted.append(fields[1])
            nursery.cancel_scope.cancel()
        assert (op, fields) == (0x02, ["tunnel 5: message sent beyond the credit granted"])
        assert await opener.closed()
        assert server.counters["clients_cut_off"] == 1
        # The member grants enough for what the node took, reads it, and hears the close.
        await member.send(b"\x0b" + uvarint(77) + uvarint(64 << 20))
        received = 0
        while True:
            op, fields = await member.read()
            if op == 0x0D:
                break
            assert op == 0x0C and fields[0] == 77, (op, fields)
            received += len(fields[2])
        assert fields[0] == 77
        assert received % len(message) == 0
        # Each message the node took started within the credit it had granted.
        assert received <= sum(granted) + len(message) - 65536


async def test_multichunk_messages_both_ways_keep_to_the_chunk_limit(relay):
    """The chunk limit is the node's: it announces it to the member in TunInit and to the
    opener in TunConfirm (a client's TunInit carries no chunk limit in v1.0-draft2: its third
    field is the timeout), and keeps to it itself. A client may send smaller chunks. Every
    message arrives whole, its first TunTransfer carrying its size and the later ones 0."""
    port, _, _ = relay
    with trio.fail_after(20):
        member, opener, member_limit, opener_limit = await _one_node_tunnel(
            port, member_credit=1 << 20)
        await opener.send(b"\x0b" + uvarint(5) + uvarint(1 << 20))
        # opener -> member, sent in chunks of 3,000 bytes
        there = bytes(range(256)) * 800  # 204,800 bytes
        await opener.send(transfer(5, there, chunk=3000))
        chunks = await member.read_chunks(77)
        assert b"".join(c for _, c in chunks) == there
        assert [size for size, _ in chunks] == [len(there)] + [0] * (len(chunks) - 1)
        assert all(len(c) <= member_limit for _, c in chunks)
        # member -> opener, sent in chunks of the limit the node announced to the member
        back = bytes(reversed(range(256))) * 1200  # 307,200 bytes
        await member.send(transfer(77, back, chunk=member_limit))
        chunks = await opener.read_chunks(5)
        assert b"".join(c for _, c in chunks) == back
        assert [size for size, _ in chunks] == [len(back)] + [0] * (len(chunks) - 1)
        assert all(len(c) <= opener_limit for _, c in chunks)
        assert len(chunks) >= len(back) / opener_limit > 1
        # and small ones after, in order, each in one chunk
        for i in range(3):
            await member.send(transfer(77, b"%d" % i))
        for i in range(3):
            assert await opener.read_chunks(5) == [(1, b"%d" % i)]


async def test_a_busy_raw_member_is_not_handed_requests_that_expired_on_the_way(relay,
                                                                                  nursery):
    """A member client that does not read its socket while four callers (on another node)
    with 1 ms timeouts give up: afterwards it finds at most one of those requests (the node
    hands over none whose caller has given up), with at most 1 ms left; a request with 5 s
    is then handed over with the time its caller has left, and answered."""
    port, nodes, _ = relay
    other_port = await nursery.start(RelayServer(nodes[1]).serve, 0, ("127.0.0.1",))
    with trio.fail_after(30):
        member = await Client.connect(port, cluster="busy")
        caller = await Client.connect(other_port)
        await caller.send(b"".join(request(rid, "busy", b"short %d" % rid, 1)
                                   for rid in range(1, 5)))
        replies = sorted([await caller.read() for _ in range(4)])
        assert [(op, fields[0]) for op, fields in replies] == [(0x05, rid) for rid in range(1, 5)]
        assert all(fields[1] for _, fields in replies), replies  # each timed out
        # Only now does the member read: what the node handed it meanwhile comes first.
        await caller.send(request(5, "busy", b"long", 5000))
        stale = []
        while True:
            op, (rid, data, timeout) = await member.read()
            assert op == 0x04
            if data == b"long":
                break
            stale.append((data, timeout))
        assert len(stale) <= 1 and all(timeout <= 1 for _, timeout in stale), stale
        assert 1 <= timeout <= 5000
        await member.send(reply_ok(rid, b"done"))
        assert await caller.read() == (0x05, [5, False, True, b"done"])


async def test_a_request_that_expires_before_reaching_a_member_client_times_out(relay):
    """Caller and member on one node: 1 ms requests reach the member's relay with less than
    1 ms left and are not handed over. Their callers must hear that they timed out (the
    protocol's Reply with timeout set), not a fault as if the service had failed them."""
    port, _, server = relay
    with trio.fail_after(20):
        member = await Client.connect(port, cluster="busy")
        caller = await Client.connect(port)
        await caller.send(b"".join(request(rid, "busy", b"x", 1) for rid in range(1, 21)))
        replies = sorted([await caller.read() for _ in range(20)])
        assert server.counters.get("requests_expired", 0) > 0  # they reached the member's relay
        assert await member.nothing_arrives(0.1)
        assert replies == [(0x05, [rid, True]) for rid in range(1, 21)]


def test_tunnel_packets_round_trip_through_the_readers():
    """The library's own encoders and readers (the client above does not use them)."""
    node_side = [rp.NodeTunInit.pack(3, 65536), rp.NodeTunConfirm.pack(4, True),
                 rp.NodeTunConfirm.pack(5, False, 65536), rp.TunAllow.pack(6, 1 << 22),
                 rp.TunTransfer.pack(7, 300, b"x" * 200), rp.NodeTunClose.pack(8, "bye")]
    assert rp.NodeReader().feed(b"".join(node_side)) == [
        rp.NodeTunInit(3, 65536), rp.NodeTunConfirm(4, True, 0), rp.NodeTunConfirm(5, False, 65536),
        rp.TunAllow(6, 1 << 22), rp.TunTransfer(7, 300, b"x" * 200), rp.NodeTunClose(8, "bye")]
    client_side = [rp.TunInit.pack(1, "tun", 3000), rp.TunConfirm.pack(2, 77),
                   rp.TunAllow.pack(77, 1 << 20), rp.TunTransfer.pack(77, 0, b"y" * 5),
                   rp.TunClose.pack(77)]
    assert rp.ClientReader().feed(b"".join(client_side)) == [
        rp.TunInit(1, "tun", 3000), rp.TunConfirm(2, 77), rp.TunAllow(77, 1 << 20),
        rp.TunTransfer(77, 0, b"y" * 5), rp.TunClose(77)]


def test_readers_give_the_same_packets_however_the_bytes_are_split():
    """Fields and multi-byte varints cut anywhere across reads; one reader per split."""
    packets = [request(300, "echo", b"a" * 200, 70_000), reply_ok(5, b""),
               reply_fault(20_000, "no"), b"\x08" + text("topic") + blob(b"z" * 130),
               b"\x0c" + uvarint(1 << 30) + uvarint(0) + blob(b"q")]
    stream = b"".join(packets)
    whole = rp.ClientReader().feed(stream)
    assert len(whole) == len(packets) and whole[0] == rp.Request(300, "echo", b"a" * 200, 70_000)
    for size in (1, 2, 3, 7, 64, 129):
        reader = rp.ClientReader()
        got = []
        for i in range(0, len(stream), size):
            got += reader.feed(stream[i:i + size])
        assert got == whole and reader.pending == 0
        assert type(got[0].request) is bytes and type(got[3].event) is bytes  # not bytearray views


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_readers_never_fail_on_arbitrary_bytes(chunks):
    """Any bytes, cut anywhere: the readers return packets, keep a partial one, or stop with a
    protocol error; nothing else escapes, and nothing more comes out after an error."""
    for reader in (rp.ClientReader(), rp.NodeReader()):
        for chunk in chunks:
            before = reader.error
            packets = reader.feed(chunk)
            if before is not None:
                assert packets == [] and reader.error is before
        assert reader.error is None or isinstance(reader.error, rp.RelayError)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    request(1, "c", b"r", 5), reply_ok(2, b"ok"), reply_fault(3, "f"), init("x"), b"\x02",
    b"\x03" + text("c") + blob(b"b"), b"\x06" + text("t"), b"\x07" + text("t"),
    b"\x08" + text("t") + blob(b"e"), b"\x09" + uvarint(4) + text("c") + uvarint(9),
    b"\x0a" + uvarint(1) + uvarint(2), b"\x0b" + uvarint(1) + uvarint(300),
    b"\x0c" + uvarint(1) + uvarint(3) + blob(b"abc"), b"\x0d" + uvarint(1)]), max_size=20),
    st.integers(1, 50))
def test_any_sequence_of_valid_packets_parses_the_same_in_any_chunking(packets, size):
    stream = b"".join(packets)
    reader = rp.ClientReader()
    got = []
    for i in range(0, len(stream), size):
        got += reader.feed(stream[i:i + size])
    assert reader.error is None and reader.pending == 0 and got == rp.ClientReader().feed(stream)
    assert len(got) == len(packets)


# ------------------------------------------------------------------ the Python client library
async def test_python_client_multiplexes_requests_events_and_broadcasts(relay):
    from iris.relay.client import RelayClient

    port, _, _ = relay
    broadcasts, events = [], []

    class Upper:
        async def handle_request(self, data):
            if data == b"fail":
                raise ValueError("refused")
            # A handler that takes a moment, so that the concurrent requests below are
            # really in progress together (the time is the subject here, not a wait).
            await trio.sleep(0.01)
            return data.upper()

        async def handle_broadcast(self, data):
            broadcasts.append(data)

    event_arrived = trio.Event()

    async def on_event(data):
        events.append(data)
        event_arrived.set()

    with trio.fail_after(20):
        async with RelayClient.open(port, cluster="upper", handler=Upper()) as member, \
                RelayClient.open(port) as caller:
            replies = {}

            async def ask(i):
                replies[i] = await caller.request("upper", b"m%d" % i, timeout=5)

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(ask, i)
            assert replies == {i: b"M%d" % i for i in range(50)}
            assert await caller.request("upper", b"default") == b"DEFAULT"  # 5 s, as a node's
            with pytest.raises(iris.RemoteError, match="refused"):
                await caller.request("upper", b"fail", timeout=5)
            # A remote error: the protocol's only kind of error.
            with pytest.raises(iris.RemoteError, match="no members"):
                await caller.request("nobody", b"?", timeout=2)
            await caller.broadcast("upper", b"to all")
            await member.subscribe("news", on_event)
            # The protocol does not confirm a subscription: it is in place once a probe
            # event arrives. Probe again until one does.
            while not event_arrived.is_set():
                await caller.publish("news", b"probe")
                with trio.move_on_after(0.1):
                    await event_arrived.wait()
            events.clear()
            for i in range(20):
                await caller.publish("news", b"%d" % i)
            await wait_until(lambda: len(events) >= 20)
            assert events[-20:] == [b"%d" % i for i in range(20)]
            await wait_until(lambda: broadcasts == [b"to all"])
            status = await caller.status()
            assert status["state"] == "active" and status["relay"]["clients"] == 2


async def test_python_client_refuses_oversized_messages_and_keeps_its_connection(relay):
    """More than the overlay carries (8 MiB) is refused before it is sent, with the limit in
    the error; a member's oversized reply reaches its caller as that reason. Both connections
    go on serving."""
    from iris.core.messages import MAX_PAYLOAD
    from iris.relay.client import RelayClient

    port, _, _ = relay
    big = b"x" * (MAX_PAYLOAD + 1)

    class Sizes:
        async def handle_request(self, data):
            return big if data == b"big" else data

    with trio.fail_after(20):
        async with RelayClient.open(port, cluster="sizes", handler=Sizes()) as member, \
                RelayClient.open(port) as caller:
            for send in (lambda: caller.publish("news", big),
                         lambda: caller.broadcast("sizes", big),
                         lambda: caller.request("sizes", big, timeout=5)):
                with pytest.raises(iris.LimitExceededError, match=f"exceeds {MAX_PAYLOAD}"):
                    await send()
            with pytest.raises(iris.RemoteError, match=f"reply of .* exceeds {MAX_PAYLOAD}"):
                await caller.request("sizes", b"big", timeout=5)
            assert await caller.request("sizes", b"small", timeout=5) == b"small"
            assert (await member.status())["state"] == "active"


async def test_a_busy_member_client_never_runs_requests_whose_callers_gave_up(relay):
    """One handler slot, held by a long request; four requests with short timeouts wait for
    it past their callers' deadlines and are never run (the Iris client libraries' own
    expiration test: at most one of four runs)."""
    from iris.relay.client import RelayClient

    port, _, _ = relay
    ran, release = [], trio.Event()

    class Busy:
        async def handle_request(self, data):
            ran.append(data)
            if data == b"long":
                await release.wait()
            return data

    async def short(caller, i):
        with pytest.raises(iris.TimeoutError):
            await caller.request("busy", b"short %d" % i, timeout=0.05)

    with trio.fail_after(20):
        async with RelayClient.open(port, cluster="busy", handler=Busy(),
                                    max_concurrency=1) as _, RelayClient.open(port) as caller:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller.request, "busy", b"long", 10)
                await wait_until(lambda: ran == [b"long"])
                async with trio.open_nursery() as shorts:
                    for i in range(4):
                        shorts.start_soon(short, caller, i)
                release.set()
            assert await caller.request("busy", b"fresh", timeout=5) == b"fresh"
            assert ran == [b"long", b"fresh"]


async def test_python_client_hears_the_node_close_the_connection(relay):
    from iris.relay.client import RelayClient

    port, _, server = relay

    class Never:
        async def handle_request(self, data):
            await trio.sleep_forever()

    with trio.fail_after(20):
        async with RelayClient.open(port, cluster="never", handler=Never()), \
                RelayClient.open(port) as caller:
            outcome = []

            async def ask():
                try:
                    await caller.request("never", b"?", timeout=30)
                except iris.ClosedError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await wait_until(lambda: caller._waiting)
                await wait_until(lambda: any(c.session.asking for c in server.connections))
                (conn,) = [c for c in server.connections if c.session.asking]
                conn.close("node going away")
            assert await caller.wait_closed() == "node going away"
            assert len(outcome) == 1
            with pytest.raises(iris.ClosedError):
                await caller.publish("news", b"too late")


async def test_python_client_tunnels_both_ways_with_large_messages_in_order(relay, nursery):
    """A member client echoes on every tunnel it gets; an opener on another node's relay (a
    tunnel's ends are on two nodes) sends small messages and ones far beyond the 4 MiB window."""
    from iris.relay.client import RelayClient

    port, nodes, _ = relay
    other_port = await nursery.start(RelayServer(nodes[1]).serve, 0, ("127.0.0.1",))
    ended = []

    class Echo:
        async def handle_request(self, data):
            return data

        async def handle_tunnel(self, tunnel):
            try:
                while True:
                    await tunnel.send(await tunnel.receive())
            except iris.ClosedError as exc:
                ended.append(str(exc))

    with trio.fail_after(60):
        async with RelayClient.open(port, cluster="tun", handler=Echo()), \
                RelayClient.open(other_port) as opener:
            # The member is reachable once its registration has grafted.
            tunnel = await retry(lambda: opener.tunnel("tun", timeout=2),
                                 errors=(iris.TimeoutError,))
            async with tunnel:
                big = bytes(range(256)) * (24 * 1024)  # 6 MiB: many chunks, beyond the window
                small = [b"%d" % i for i in range(500)]

                async def send_all():
                    for message in small + [big] + small:
                        await tunnel.send(message)

                nursery.start_soon(send_all)
                got = [await tunnel.receive() for _ in range(2 * len(small) + 1)]
            assert got == small + [big] + small
            await wait_until(lambda: ended)  # the member saw the close
            with pytest.raises(iris.ClosedError):
                await tunnel.send(b"after close")
            with pytest.raises(iris.IrisError):
                await opener.tunnel("nobody", timeout=1)


async def test_clients_coming_and_going_under_load_leave_no_state_behind(relay):
    """Members that vanish abruptly (no Close) in the middle of serving, callers asking all the
    while: every request ends (a reply, or a remote error naming the departure, never a hang),
    and once everyone has left the relay holds nothing of theirs."""
    import random

    from iris.relay.client import RelayClient

    port, _, server = relay
    rng = random.Random(7)
    outcomes = {"ok": 0, "error": 0}

    class Slowish:
        async def handle_request(self, data):
            # Serving takes a moment, so that members leave in the middle of it (the time
            # is the subject here, not a wait).
            await trio.sleep(rng.random() * 0.02)
            return data

    async def member_life():
        for life in range(4):
            for attempt in range(5):  # loopback under this churn now and then resets a connect
                try:
                    async with RelayClient.open(port, cluster="churn",
                                                handler=Slowish()) as member:
                        # A member's lifetime: the churn this test is about, not a wait.
                        await trio.sleep(rng.uniform(0.05, 0.3))
                        if life % 2:  # gone without a word, in the middle of what it serves
                            await trio.aclose_forcefully(member._relay.stream)
                    break
                except iris.IrisError as exc:
                    assert "no node relay" in str(exc) and attempt < 4
                    # A short back-off before connecting again, so the retries of six
                    # members do not meet the same overflowing accept queue at once.
                    await trio.sleep(0.05)

    async def caller_life():
        async with RelayClient.open(port) as caller:
            for i in range(60):
                try:
                    await caller.request("churn", b"%d" % i, timeout=5)
                    outcomes["ok"] += 1
                except iris.IrisError:
                    outcomes["error"] += 1

    with trio.fail_after(60):
        # One steady member, and members and callers coming and going.
        async with RelayClient.open(port, cluster="churn", handler=Slowish()), \
                trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(member_life)
            for _ in range(6):
                nursery.start_soon(caller_life)
        assert outcomes["ok"] + outcomes["error"] == 360 and outcomes["ok"] >= 300, outcomes
        await wait_until(lambda: not server.connections and not server.members)


async def test_a_client_that_resets_its_connection_mid_stream_takes_down_nothing_else(relay,
                                                                                      nursery):
    """A subscriber resets its connection (RST) while the node is writing it events, and an
    opener resets while its tunnel has data on the way: the relay serves the others on."""
    import socket as stdlib_socket
    import struct

    port, nodes, server = relay
    other_port = await nursery.start(RelayServer(nodes[1]).serve, 0, ("127.0.0.1",))

    def reset(client):
        client.stream.socket.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))

    with trio.fail_after(30):
        subscriber = await Client.connect(port)
        await subscriber.send(b"\x06" + text("flood"))
        publisher = await Client.connect(port)
        for _ in range(50):
            await publisher.send(b"\x08" + text("flood") + blob(b"e" * 60_000))
        reset(subscriber)
        await subscriber.stream.aclose()
        member, opener = await _open_tunnel(relay, nursery)
        await opener.send(transfer(5, b"t" * 3_000_000))
        reset(opener)
        await opener.stream.aclose()
        for _ in range(20):
            await publisher.send(b"\x08" + text("flood") + blob(b"e" * 60_000))
        # Both relays still answer.
        for relay_port in (port, other_port):
            caller = await Client.connect(relay_port)
            await caller.send(request(9, "iris.status", b"", 1000))
            op, fields = await caller.read()
            assert op == 0x05 and fields[:3] == [9, False, True]


async def test_python_client_serves_at_most_max_concurrency_requests_at_once(relay):
    """40 requests at once to a member client allowed 4 at a time: 4 handlers start, no
    fifth while they are busy, and the rest are served as they finish."""
    from iris.relay.client import RelayClient

    port, _, _ = relay
    running = most = served = 0
    release = trio.Event()

    class Busy:
        async def handle_request(self, data):
            nonlocal running, most, served
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1
            served += 1
            return data

    with trio.fail_after(30):
        async with RelayClient.open(port, cluster="busy", handler=Busy(), max_concurrency=4), \
                RelayClient.open(port) as caller, trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(caller.request, "busy", b"%d" % i, 10)
            await wait_until(lambda: running == 4)
            await trio.testing.wait_all_tasks_blocked()  # a fifth would have started by now
            assert running == most == 4
            release.set()
            await wait_until(lambda: served == 40)
    assert most == 4
