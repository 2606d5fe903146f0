"""The relay's node-wide bounds: one memory budget over all connections, the configurable
limits, and accepting connections when the process is out of file descriptors.

Clients here are the spec client of test_relay.py (written from the protocol, not from the
server's encoder)."""

import contextlib
import json
import subprocess
import sys

import pytest
import trio
from conftest import retry, wait_until
from test_relay import Client, blob, free_port, request, stop_process, text, uvarint

import iris
import iris.testing
from iris.relay.server import RelayServer
from iris.relay.session import Limits

MiB = 1024 * 1024


async def _serve(nursery, node, limits):
    server = RelayServer(node, limits)
    port = await nursery.start(server.serve, 0, ("127.0.0.1",))
    return server, port


async def _peak(server, into: list[int]) -> None:
    """Record the most memory the relay counted, at every pass of the run loop."""
    while True:
        into[0] = max(into[0], server.memory.queued)
        await trio.lowlevel.checkpoint()


async def _send_until_closed(client: Client, data: bytes) -> None:
    """Send `data`, unless the node closes the connection first (as it does at a deadline)."""
    with contextlib.suppress(trio.BrokenResourceError):
        await client.send(data)


async def _status(client: Client, rid: int) -> dict:
    await client.send(request(rid, "iris.status", b"", 5000))
    op, (got, timed_out, success, data) = await client.read()
    assert (op, got, timed_out, success) == (0x05, rid, False, True)
    return json.loads(data)["relay"]


async def test_packets_left_unfinished_hold_at_most_half_the_budget_and_others_go_on(nursery):
    """Three clients each declare a 3 MB field and never finish it: past half of the 8 MiB
    budget their connections are not read on (the kernel holds the rest), a client with
    small packets is served meanwhile, and the packet deadline frees the memory."""
    limits = Limits(memory_bytes=8 * MiB, packet_timeout_s=3.0)
    async with iris.testing.local_nodes(1) as nodes:
        server, port = await _serve(nursery, nodes[0], limits)
        peak = [0]
        nursery.start_soon(_peak, server, peak)
        hogs = [await Client.connect(port) for _ in range(3)]
        size = 3_000_000
        header = b"\x08" + text("t") + uvarint(size)  # a Publish whose event never ends
        async with trio.open_nursery() as senders:
            for hog in hogs:
                senders.start_soon(_send_until_closed, hog, header + b"h" * (size - 1))
            with trio.fail_after(20):
                await wait_until(lambda: server.memory.congested)
                prompt = await Client.connect(port)
                assert (await _status(prompt, 1))["memory_bytes"] >= 4 * MiB
                await wait_until(lambda: server.counters.get("packet_timeouts", 0) == 3)
                await wait_until(lambda: server.memory.queued == 0)
            senders.cancel_scope.cancel()
        # Each paused reader stopped within one read (64 KiB) of the high-water mark.
        assert 4 * MiB <= peak[0] <= 4 * MiB + 3 * 65536
        assert (await _status(prompt, 2))["clients"] == 1


async def test_past_the_budget_the_client_with_most_output_queued_is_closed(nursery):
    """Two subscribers never read; each may queue 6 MiB, the node 8 MiB for everyone: before
    either reaches its own limit, the one with more queued is closed and its queue freed,
    and the budget is never exceeded by more than one event."""
    limits = Limits(memory_bytes=8 * MiB, out_bytes=6 * MiB)
    async with iris.testing.local_nodes(1) as nodes:
        server, port = await _serve(nursery, nodes[0], limits)
        peak = [0]
        nursery.start_soon(_peak, server, peak)
        subscribers = [await Client.connect(port) for _ in range(2)]
        for sub in subscribers:
            await sub.send(b"\x06" + text("firehose"))
        await wait_until(lambda: len(server.topics.get("firehose", ())
                                     and server.topics["firehose"].connections) == 2)
        publisher = await Client.connect(port)
        event = b"\x08" + text("firehose") + blob(b"e" * 16384)
        with trio.fail_after(30):
            for _ in range(4000):  # 64 MB at most: more than the kernel's buffers hold
                await publisher.send(event)
                if server.counters.get("clients_too_slow"):
                    break
            await wait_until(lambda: len(server.topics["firehose"].connections) == 1)
        assert server.counters["clients_too_slow"] == 1
        assert peak[0] <= 8 * MiB + 16500
        assert server.memory.queued <= 6 * MiB  # the closed one's queue no longer counts
        await publisher.send(b"\x02")
        assert await publisher.read() == (0x02, [""])


def test_limits_are_parsed_and_checked():
    limits = Limits.parse(["max_connections=5", "packet_timeout_s=2.5"])
    assert (limits.max_connections, limits.packet_timeout_s) == (5, 2.5)
    for bad, says in ((["nonsense=1"], "no relay limit 'nonsense'"),
                      (["max_connections=1.5"], "not a whole number"),
                      (["memory_bytes=0"], "positive"), (["init_timeout_s=nan"], "positive"),
                      (["init_timeout_s=inf"], "positive")):
        with pytest.raises(ValueError, match=says):
            Limits.parse(bad)


def test_a_bad_relay_limit_is_a_one_line_error(tmp_path):
    key = tmp_path / "k"
    key.write_bytes(iris.generate_network_key())
    run = subprocess.run([sys.executable, "-m", "iris.cli", "node", "--network-key-file",
                          str(key), "--relay-limit", "max_connections=-1"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2  # bad input (iris.cli)
    assert run.stderr.strip() == ("iris node: relay limit max_connections must be a positive "
                                  "finite number, not -1")


def _limit_open_files(n: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return apply


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_NOFILE as Linux enforces it")
async def test_out_of_descriptors_the_node_backs_off_quietly_and_recovers(tmp_path):
    """A node allowed 64 open files: 120 connections to its overlay port that never
    handshake exhaust them. Accepting backs off with one-line warnings (no traceback); once
    they are gone, the relay serves again."""
    key = tmp_path / "k"
    key.write_bytes(iris.generate_network_key())
    listen, relay_port = free_port(), free_port()
    log = (tmp_path / "node.log").open("w+")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "iris.cli", "node", "--network-key-file", str(key),
         "--listen", f"127.0.0.1:{listen}", "--relay-port", str(relay_port)],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=_limit_open_files(64))
    streams = []
    try:
        with trio.fail_after(30):
            first = await retry(lambda: Client.connect(relay_port), errors=(OSError,))
            assert (await _status(first, 1))["max_clients"] == 32  # half of 64
            for _ in range(120):
                streams.append(await trio.open_tcp_stream("127.0.0.1", listen))
            await wait_until(lambda: "cannot accept connections" in
                             (tmp_path / "node.log").read_text())
            for stream in streams:
                await stream.aclose()
            streams.clear()
            # Served again: a new client once descriptors are free (the backlog drains).
            second = await retry(lambda: Client.connect(relay_port),
                                 errors=(OSError, EOFError, trio.BrokenResourceError))
            assert (await _status(second, 1))["clients"] == 2
    finally:
        for stream in streams:
            await stream.aclose()
        await stop_process(proc)
        log.close()
    text_logged = (tmp_path / "node.log").read_text()
    assert "Traceback" not in text_logged
    assert text_logged.count("cannot accept connections") <= 2  # rate-limited


async def test_at_the_limit_the_oldest_connection_without_init_makes_room(nursery):
    """Connections that never send their Init cannot lock clients out until their Init
    deadline: at the limit, the oldest of them is closed (with a Deny) for a new one; a
    connection that did send its Init is never closed so."""
    async with iris.testing.local_nodes(1) as nodes:
        server, port = await _serve(nursery, nodes[0], Limits(max_connections=3))
        with trio.fail_after(20):
            working = await Client.connect(port)
            idle = [Client(await trio.open_tcp_stream("127.0.0.1", port)) for _ in range(2)]
            await wait_until(lambda: len(server.greeting) == 2)
            newcomer = await Client.connect(port)  # the limit was reached: idle[0] made room
            assert await idle[0].read() == (0x01, ["iris-relay-magic",
                                                   "the node is at its connection limit"])
            assert await idle[0].closed()
            assert (await _status(newcomer, 1))["connections_evicted"] == 1
            assert (await _status(working, 2))["clients"] == 3
            assert server.greeting.keys() == {conn for conn in server.connections
                                              if conn.session.state == "new"}
