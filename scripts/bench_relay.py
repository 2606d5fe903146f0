"""Through the relay: what `iris node` processes serve to local relay clients.

    python scripts/bench_relay.py [--requests 5000] [--events 50000] [--tunnel 20000]

Starts one `iris node` process A (relay on a free port). In this process, relay clients of A:
a member connection answering requests of cluster "bench" (and counting broadcasts), a
subscriber connection counting events, and callers. Measured on that one-node ring: request
round trips per second with 1 caller and with 16 callers (16 connections), published and
broadcast messages per second as received by the subscriber/member.

Then the tunnel phase (a tunnel's two ends are never on the same node): a second node process
B joins A. A member connection on B registers cluster "bench-tun", confirms the inbound tunnel,
grants 4 MiB of credit and returns credit each time it has consumed 1 MiB more; an opener
connection on A opens a tunnel to "bench-tun" and sends --tunnel messages of 1 KiB, then
--tunnel/20 messages of 64 KiB, within the credit the node grants it (writes batched up to
64 KiB). Measured: from the first send until the member has received every message whole,
tunnel messages per second and MB (10^6 bytes of message payload) per second. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import trio  # noqa: E402

import iris  # noqa: E402
from iris import relay_protocol as rp  # noqa: E402
from iris.relay_client import RelayClient  # noqa: E402


PROBE = b"probe"  # published until the subscriber sees one; not counted


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def measure(port: int, args: argparse.Namespace) -> dict:
    out: dict = {}
    member = await RelayClient.connect(port, cluster="bench")
    broadcasts = 0

    async def serve_member() -> None:
        nonlocal broadcasts
        while True:
            packet = await member.read()
            if isinstance(packet, rp.NodeRequest):
                await member.stream.send_all(rp.client_reply(packet.id, True, packet.request))
            elif isinstance(packet, rp.NodeBroadcast):
                broadcasts += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_member)
        callers = [await RelayClient.connect(port) for _ in range(16)]
        with trio.fail_after(30):  # the membership is in place once a request succeeds
            while True:
                try:
                    await callers[0].request("bench", b"warm", 1.0)
                    break
                except iris.IrisError:
                    await trio.sleep(0.1)
        for count_callers in (1, 16):
            total = args.requests if count_callers > 1 else max(1, args.requests // 3)
            latencies: list[float] = []

            async def call(client: RelayClient, n: int) -> None:
                for _ in range(n):
                    t = time.perf_counter()
                    await client.request("bench", b"x" * 64, 10.0)
                    latencies.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            async with trio.open_nursery() as group:
                for i in range(count_callers):
                    group.start_soon(call, callers[i], total // count_callers + (i < total % count_callers))
            wall = time.perf_counter() - t0
            latencies.sort()
            out[f"requests_{count_callers}_per_s"] = round(total / wall)
            out[f"requests_{count_callers}_p50_us"] = round(latencies[len(latencies) // 2] * 1e6)

        # Publish: one publisher connection, one subscriber connection.
        subscriber = await RelayClient.connect(port)
        received = 0
        first = last = 0.0
        subscribed = trio.Event()

        async def count_events() -> None:
            nonlocal received, first, last
            async for data in subscriber.events("bench-topic"):
                if data == PROBE:
                    subscribed.set()
                    continue
                if not received:
                    first = time.perf_counter()
                received += 1
                last = time.perf_counter()

        nursery.start_soon(count_events)
        publisher = callers[1]
        with trio.fail_after(30):  # the subscription is in place once a probe arrives
            while not subscribed.is_set():
                await publisher.publish("bench-topic", PROBE)
                with trio.move_on_after(0.05):
                    await subscribed.wait()
        event = b"e" * 1024
        t0 = time.perf_counter()
        for _ in range(args.events):
            await publisher.publish("bench-topic", event)
        with trio.move_on_after(60):
            while received < args.events:
                await trio.sleep(0.05)
        out["publish_sent_per_s"] = round(args.events / (time.perf_counter() - t0))
        out["publish_received"] = received
        out["publish_received_per_s"] = round(received / max(1e-9, last - first))

        t0 = time.perf_counter()
        for _ in range(args.events):
            await publisher.broadcast("bench", event)
        with trio.move_on_after(60):
            while broadcasts < args.events:
                await trio.sleep(0.05)
        out["broadcast_received"] = broadcasts
        out["broadcast_received_per_s"] = round(broadcasts / (time.perf_counter() - t0))
        nursery.cancel_scope.cancel()
    return out


TUN_CLUSTER = "bench-tun"
TUN_GRANT = 4 * 1024 * 1024  # the member's initial credit
TUN_REGRANT = 1024 * 1024  # the member returns credit each time it has consumed this much
WRITE_BATCH = 64 * 1024  # the opener's write buffer


async def connect(port: int, cluster: str = "", deadline_s: float = 30.0) -> RelayClient:
    """A relay connection, retried until the node's relay accepts it."""
    with trio.fail_after(deadline_s):
        while True:
            try:
                return await RelayClient.connect(port, cluster=cluster)
            except iris.IrisError:
                await trio.sleep(0.1)


class TunnelMember:
    """A member connection of TUN_CLUSTER: confirms every inbound tunnel, grants credit, returns
    it as it consumes data, and counts whole messages."""

    def __init__(self, client: RelayClient) -> None:
        self.client = client
        self.messages = 0
        self.target = 0
        self.reached = trio.Event()
        self.reached_at = 0.0

    def expect(self, count: int) -> None:
        self.messages, self.target, self.reached = 0, count, trio.Event()

    async def run(self) -> None:
        client, send = self.client, self.client.stream.send_all
        next_id = 0
        left: dict[int, int] = {}  # tunnel id -> bytes still to come of the current message
        consumed: dict[int, int] = {}  # tunnel id -> bytes consumed since the last grant
        while True:
            packet = await client.read()
            kind = type(packet)
            if kind is rp.TunTransfer:
                tid, size = packet.tunnel_id, len(packet.chunk)
                if packet.size:
                    left[tid] = packet.size
                left[tid] -= size
                if not left[tid]:
                    self.messages += 1
                    if self.messages == self.target:
                        self.reached_at = time.perf_counter()
                        self.reached.set()
                consumed[tid] += size
                if consumed[tid] >= TUN_REGRANT:
                    await send(rp.client_tun_allow(tid, consumed[tid]))
                    consumed[tid] = 0
            elif kind is rp.NodeTunInit:
                next_id += 1
                left[next_id] = consumed[next_id] = 0
                await send(rp.client_tun_confirm(packet.build_id, next_id) + rp.client_tun_allow(next_id, TUN_GRANT))
            elif kind is rp.NodeTunClose:
                left.pop(packet.tunnel_id, None)
                consumed.pop(packet.tunnel_id, None)
            elif kind is rp.NodeClose:
                return


class TunnelOpener:
    """A connection that opens tunnels and sends within the credit the node grants it."""

    def __init__(self, client: RelayClient) -> None:
        self.client = client
        self.next_id = 0
        self.confirms: dict[int, list] = {}  # TunInit id -> [event, NodeTunConfirm]
        self.credit: dict[int, int] = {}  # tunnel id -> bytes we may still start sending
        self.credit_changed = trio.Event()
        self.closed: set[int] = set()  # tunnels we closed (the node confirms with TunClose)

    async def run(self) -> None:
        while True:
            packet = await self.client.read()
            kind = type(packet)
            if kind is rp.TunAllow:
                self.credit[packet.tunnel_id] = self.credit.get(packet.tunnel_id, 0) + packet.space
                self.credit_changed.set()
            elif kind is rp.NodeTunConfirm:
                slot = self.confirms.pop(packet.id, None)
                if slot is not None:
                    slot[1] = packet
                    slot[0].set()
            elif kind is rp.NodeTunClose and packet.tunnel_id not in self.closed:
                raise RuntimeError(f"tunnel {packet.tunnel_id} closed by the node: {packet.reason}")
            elif kind is rp.NodeClose:
                raise RuntimeError(f"the node closed the opener's connection: {packet.reason}")

    async def open(self, cluster: str, timeout_ms: int) -> rp.NodeTunConfirm:
        self.next_id += 1
        slot = self.confirms[self.next_id] = [trio.Event(), None]
        await self.client.stream.send_all(rp.client_tun_init(self.next_id, cluster, timeout_ms))
        await slot[0].wait()
        return slot[1]

    async def close(self, tid: int) -> None:
        self.closed.add(tid)
        await self.client.stream.send_all(rp.client_tun_close(tid))

    async def send(self, tid: int, chunk_limit: int, message: bytes, count: int) -> None:
        """`count` copies of `message`: each starts once the credit covers its first chunk;
        its continuation chunks follow regardless (the protocol's rule)."""
        first = min(len(message), chunk_limit)
        packets = rp.client_tun_transfer(tid, len(message), message[:chunk_limit]) + b"".join(
            rp.client_tun_transfer(tid, 0, message[start : start + chunk_limit])
            for start in range(chunk_limit, len(message), chunk_limit))
        send, batch = self.client.stream.send_all, bytearray()
        for _ in range(count):
            while self.credit.get(tid, 0) < first:
                if batch:
                    await send(batch)
                    batch = bytearray()
                else:
                    self.credit_changed = trio.Event()
                    await self.credit_changed.wait()
            self.credit[tid] -= len(message)
            batch += packets
            if len(batch) >= WRITE_BATCH:
                await send(batch)
                batch = bytearray()
        if batch:
            await send(batch)


async def measure_tunnel(relay_a: int, start_b: Callable[[], int], args: argparse.Namespace) -> dict:
    out: dict = {}
    relay_b = start_b()
    member = TunnelMember(await connect(relay_b, cluster=TUN_CLUSTER))
    opener = TunnelOpener(await connect(relay_a))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(member.run)
        nursery.start_soon(opener.run)
        with trio.fail_after(60):  # B has joined and the registration is usable once a tunnel opens
            while True:
                confirm = await opener.open(TUN_CLUSTER, 1000)
                if not confirm.timed_out:
                    break
                await trio.sleep(0.1)
        for label, size, count in (("1k", 1024, args.tunnel), ("64k", 64 * 1024, max(1, args.tunnel // 20))):
            member.expect(count)
            t0 = time.perf_counter()
            with trio.fail_after(300):
                await opener.send(confirm.id, confirm.chunk_limit, b"t" * size, count)
                await member.reached.wait()
            wall = member.reached_at - t0
            out[f"tunnel_{label}_msgs_per_s"] = round(count / wall)
            out[f"tunnel_{label}_mb_per_s"] = round(count * size / wall / 1e6, 1)
        await opener.close(confirm.id)
        nursery.cancel_scope.cancel()
    return out


@contextlib.contextmanager
def node_process(key_file: str, seed_port: int | None = None) -> Iterator[tuple[int, int]]:
    """An `iris node` process on free ports, joining through `seed_port` if given; yields
    (listen port, relay port) and terminates the process on exit."""
    listen_port, relay_port = free_port(), free_port()
    command = [sys.executable, "-m", "iris.cli", "node", "--network-key-file", key_file,
               "--listen", f"127.0.0.1:{listen_port}", "--relay-port", str(relay_port)]
    if seed_port is not None:
        command += ["--seed", f"127.0.0.1:{seed_port}"]
    node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield listen_port, relay_port
    finally:
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--tunnel", type=int, default=20_000, help="1 KiB tunnel messages (and a 20th as many of 64 KiB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as nodes:  # nodes stop first
        key_file = os.path.join(tmp, "net.key")
        with open(key_file, "wb") as f:
            f.write(iris.generate_network_key())
        listen_a, relay_a = nodes.enter_context(node_process(key_file))

        def start_b() -> int:
            """Node B joins A only for the tunnel phase: the phases before measure a one-node ring."""
            return nodes.enter_context(node_process(key_file, seed_port=listen_a))[1]

        async def run() -> dict:
            await (await connect(relay_a)).close()
            result = await measure(relay_a, args)
            result.update(await measure_tunnel(relay_a, start_b, args))
            return result

        result = trio.run(run)
    result.update(python=sys.version.split()[0], cpus=os.cpu_count())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
