"""Through the relay: what one `iris node` process serves to local relay clients.

    python scripts/bench_relay.py [--requests 5000] [--events 50000]

Starts one `iris node` process (relay on a free port). In this process, relay clients:
a member connection answering requests of cluster "bench" (and counting broadcasts), a
subscriber connection counting events, and callers. Measured: request round trips per second
with 1 caller and with 16 callers (16 connections), published and broadcast messages per
second as received by the subscriber/member. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import trio  # noqa: E402

import iris  # noqa: E402
from iris import relay_protocol as rp  # noqa: E402
from iris.relay_client import RelayClient  # noqa: E402


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

        async def count_events() -> None:
            nonlocal received, first, last
            async for _ in subscriber.events("bench-topic"):
                if not received:
                    first = time.perf_counter()
                received += 1
                last = time.perf_counter()

        nursery.start_soon(count_events)
        publisher = callers[1]
        await trio.sleep(0.5)  # the subscription is grafted by then on a one-node ring
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key_file = os.path.join(tmp, "net.key")
        with open(key_file, "wb") as f:
            f.write(iris.generate_network_key())
        relay_port = free_port()
        node = subprocess.Popen(
            [sys.executable, "-m", "iris.cli", "node", "--network-key-file", key_file,
             "--listen", f"127.0.0.1:{free_port()}", "--relay-port", str(relay_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async def run() -> dict:
                with trio.fail_after(30):
                    while True:
                        try:
                            await (await RelayClient.connect(relay_port)).close()
                            break
                        except iris.IrisError:
                            await trio.sleep(0.1)
                return await measure(relay_port, args)

            result = trio.run(run)
        finally:
            node.terminate()
            node.wait(timeout=10)
    result.update(python=sys.version.split()[0], cpus=os.cpu_count())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
