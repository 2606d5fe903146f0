"""Two real nodes on loopback TCP, encryption on, one process each: what they sustain.

    python scripts/bench_node.py [--requests 10000] [--events 200000] [--tunnel 20000]
                                 [--busy-poll-us 0]

The parent process runs node A (the caller); it starts node B (the server) as a child process
running this script with `--serve`. Measured:
- request/reply round trips per second with 1 and with 16 concurrent callers, p50 and p99;
- publish/subscribe of 1 KiB events, one producer (A) and one consumer (B): sent/s at A,
  received/s at B, and B's mean latency after 1k, 5k, 10k, 50k, 100k, ... events (the seed
  article's method; events carry their send time, CLOCK_MONOTONIC is shared by processes);
- one tunnel A -> B, 1 KiB and 64 KiB messages: messages/s and MB/s;
- CPU time per request and per event on each side.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import trio  # noqa: E402

import iris  # noqa: E402

CHECKPOINTS = (1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000)


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Server:
    """Node B's application: echo, event accounting, tunnel sink, stats."""

    def __init__(self) -> None:
        self.events = 0
        self.latency_sum = 0.0
        self.first = self.last = 0.0
        self.checkpoints: dict[int, float] = {}

    async def handle_request(self, data: bytes) -> bytes:
        if data == b"stats":
            return json.dumps({
                "events": self.events, "first": self.first, "last": self.last,
                "checkpoints": self.checkpoints, "cpu_s": cpu_s(),
            }).encode()
        return data

    async def on_event(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.events:
            self.first = now
        self.last = now
        self.events += 1
        self.latency_sum += now - float(data[:20])
        if self.events in CHECKPOINTS:
            self.checkpoints[self.events] = self.latency_sum / self.events * 1000

    async def handle_tunnel(self, tunnel: iris.Tunnel) -> None:
        try:
            while True:
                data = await tunnel.receive()
                if data == b"done":
                    await tunnel.send(b"ok")
        except iris.ClosedError:
            pass


async def serve(key_file: str, port: int, busy_poll_s: float) -> None:
    key = await trio.Path(key_file).read_bytes()
    server = Server()
    async with iris.open_node(network_key=key, listen=f"127.0.0.1:{port}",
                              busy_poll_s=busy_poll_s) as node:
        await node.register("bench", server,
                            limits=iris.ServiceLimits(max_concurrency=256))
        await node.subscribe("bench-events", server.on_event,
                             limits=iris.TopicLimits(max_queued_bytes=256 * 1024 * 1024))
        print("ready", flush=True)
        await trio.sleep_forever()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def caller(node: iris.Node, payload: bytes, n: int, latencies: list[float]) -> None:
    """`n` requests one after another, each one's round trip appended to `latencies`."""
    for _ in range(n):
        t = time.perf_counter()
        await node.request("bench", payload, timeout=10)
        latencies.append(time.perf_counter() - t)


async def measure(args: argparse.Namespace, key: bytes, port: int) -> dict:
    out: dict = {}
    async with iris.open_node(network_key=key, seeds=[("127.0.0.1", port)],
                              busy_poll_s=args.busy_poll_us / 1e6) as node:
        await node.request("bench", b"warm", timeout=5)
        payload = b"x" * 64

        for callers in (1, 16):
            count = args.requests if callers > 1 else max(1, args.requests // 3)
            latencies: list[float] = []
            server0 = json.loads(await node.request("bench", b"stats", timeout=5))["cpu_s"]
            cpu0, t0 = cpu_s(), time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(callers):
                    nursery.start_soon(caller, node, payload,
                                       count // callers + (i < count % callers), latencies)
            wall = time.perf_counter() - t0
            server1 = json.loads(await node.request("bench", b"stats", timeout=5))["cpu_s"]
            out[f"requests_{callers}_cpu_us_per_msg_server"] = round(
                (server1 - server0) / count * 1e6, 1)
            out[f"requests_{callers}_per_s"] = round(count / wall)
            out[f"requests_{callers}_p50_us"] = round(pct(latencies, 0.5) * 1e6)
            out[f"requests_{callers}_p99_us"] = round(pct(latencies, 0.99) * 1e6)
            out[f"requests_{callers}_cpu_us_per_msg_caller"] = round(
                (cpu_s() - cpu0) / count * 1e6, 1)

        # Publish/subscribe, 1 KiB events.
        stats0 = json.loads(await node.request("bench", b"stats", timeout=5))
        filler = b"e" * (1024 - 20)
        cpu0, t0 = cpu_s(), time.perf_counter()
        for i in range(args.events):
            await node.publish("bench-events", f"{time.monotonic():<20.9f}".encode() + filler)
            if i % 256 == 0:
                await trio.lowlevel.checkpoint()  # let the link writer run
        send_wall = time.perf_counter() - t0
        send_cpu = cpu_s() - cpu0
        # Node B counts what it received; ask it again (every 0.2 s, not to load it) until
        # every event is in, or two minutes have passed (then the count says what arrived).
        stats = stats0
        with trio.move_on_after(120):
            while True:
                stats = json.loads(await node.request("bench", b"stats", timeout=10))
                if stats["events"] >= args.events:
                    break
                await trio.sleep(0.2)
        received = stats["events"]
        out["events_sent_per_s"] = round(args.events / send_wall)
        out["events_received"] = received
        out["events_received_per_s"] = round(received / max(1e-9, stats["last"] - stats["first"]))
        out["events_mean_latency_ms_after"] = {k: round(v, 2)
                                               for k, v in stats["checkpoints"].items()}
        out["events_cpu_us_per_msg_sender"] = round(send_cpu / args.events * 1e6, 1)
        out["events_cpu_us_per_msg_receiver"] = round(
            (stats["cpu_s"] - stats0["cpu_s"]) / max(1, received) * 1e6, 1)

        # Tunnel throughput.
        for size in (1024, 65536):
            count = args.tunnel if size == 1024 else max(1, args.tunnel // 20)
            data = b"t" * size
            async with await node.tunnel("bench", timeout=5) as tun:
                t0 = time.perf_counter()
                for _ in range(count):
                    await tun.send(data)
                await tun.send(b"done")
                assert await tun.receive() == b"ok"
                wall = time.perf_counter() - t0
            out[f"tunnel_{size // 1024}k_msgs_per_s"] = round(count / wall)
            out[f"tunnel_{size // 1024}k_mb_per_s"] = round(count * size / wall / 1e6, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tunnel", type=int, default=20_000)
    parser.add_argument("--busy-poll-us", type=float, default=0.0,
                        help="both nodes poll this long after traffic "
                             "(iris.runtime.busy_poll; embedded default 0)")
    parser.add_argument("--serve", nargs=2, metavar=("KEYFILE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.serve[0], int(args.serve[1]), args.busy_poll_us / 1e6)
        return 0
    import socket
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        key_file = os.path.join(tmp, "net.key")
        key = iris.generate_network_key()
        with open(key_file, "wb") as f:
            f.write(key)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", key_file,
                                  str(port), "--busy-poll-us", str(args.busy_poll_us)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            result = trio.run(measure, args, key, port)
        finally:
            child.terminate()
            child.wait(timeout=10)
    result.update(python=sys.version.split()[0], cpus=os.cpu_count())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
