"""Through the relay: what `iris node` processes serve to local relay clients.

    python scripts/bench_relay.py [--requests 5000] [--events 50000] [--tunnel 20000]
                                  [--connects 200] [--rounds 5] [--setup-only]

Starts one `iris node` process A (relay on a free port); the clients run in this process.
Measured on that one-node ring, each the way the Go client's own benchmarks measured the
original node:
- Connect and Register as the Go client's BenchmarkConnect and BenchmarkRegister time them,
  with a client without an event loop (blocking socket calls): each operation opens a new TCP
  connection to the relay, sends the Init (Register: naming cluster "bench-register", so every
  connection of a round is one more member of it) and waits for the node's Init answer; the
  connections stay open, and once the clock has stopped they are closed one after another (a
  Close, then the node's Close and the end of the stream), as the Go benchmark's deferred
  closes run after it stops its clock. Microseconds per operation: the median of --rounds
  rounds of --connects connections (after one round to warm up), next to the original Go
  node's figures measured on this machine on an earlier date (GO_NODE_US); the closes' time
  is reported apart;
- sequential round trips with the same kind of client (the Go client's BenchmarkReqRepLatency:
  its own connection, member of cluster "bench-seq", requests to that cluster): round trips
  per second, and microseconds per round trip as the median of --rounds rounds; as the
  machine's baseline, the same client's 1-byte round trips with an echo thread in this process
  (no relay, no node);
- with one connection registered as a member of cluster "bench" that sends requests to that
  cluster and answers them by echoing (1-byte messages): request round trips per second with 1
  request at a time and with 16 concurrent requests (16 tasks) over that connection, and the
  CPU per request of the node and of the clients;
- publish and broadcast: the connection subscribes to a topic and publishes on it (broadcasts
  to its own cluster), messages of 1 byte and of 1 KiB, from the first send until it has
  received every message back (stricter than the Go benchmark, which stopped its clock for
  publishes once they were sent);
- round trips with 16 in flight through the library client (`iris.relay.client.RelayClient`:
  a member connection echoing, another connection asking).

Then the tunnel phase (a tunnel's two ends are never on the same node): a second node process
B joins A. A member connection on B registers cluster "bench-tun", confirms the inbound tunnel,
grants 4 MiB of credit and returns credit each time it has consumed 1 MiB more; an opener
connection on A opens a tunnel to "bench-tun" and sends --tunnel messages of 1 KiB, then
--tunnel/20 messages of 64 KiB, within the credit the node grants it (writes batched up to
64 KiB). Measured: from the first send until the member has received every message whole,
tunnel messages per second and MB (10^6 bytes of message payload) per second, and CPU per
message of both nodes and of the clients. Prints one JSON object. --setup-only stops after the
Connect, Register and sequential figures (and the baseline).

Longer than 500 lines because it is one run with one JSON result: every workload shares the
node processes and the raw clients defined here, so that figures are comparable.
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
import threading
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import trio  # noqa: E402

import iris  # noqa: E402
from iris.relay import protocol as rp  # noqa: E402
from iris.relay.client import RelayClient, RelayStream  # noqa: E402
from iris.runtime.busy_poll import BusyPoll  # noqa: E402
from iris.runtime.eager_io import EagerReader, Flusher, Outbox  # noqa: E402

PROBE = b"probe"  # published until the subscriber sees one; not counted


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; 10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# The trio client polls after traffic as the node does (and Go's runtime).
CLIENT_BUSY_POLL_S = 250e-6


class MuxConnection:
    """One relay connection used the way the Go client's benchmarks use theirs: registered as a
    member of the cluster it sends to, answering every request it gets by echoing it, while any
    number of tasks send requests over it concurrently; it also counts the broadcasts and
    events it receives. Its socket I/O is the node's own (`iris.runtime.eager_io`,
    `iris.runtime.busy_poll`)."""

    def __init__(self, client: RelayStream) -> None:
        self.client = client
        self.flusher = Flusher()
        self.outbox = Outbox(client.stream, self.flusher, limit=1 << 40)
        self.busy_poll = BusyPoll(CLIENT_BUSY_POLL_S)
        self.waiting: dict[int, trio.Event] = {}
        self.next_id = 0
        self.received = 0  # broadcasts and events
        self.target = 0
        self.reached = trio.Event()
        self.probed = trio.Event()  # a PROBE event came back: the subscription is in place

    def send(self, packet: bytes) -> None:
        self.outbox.push(packet)

    async def drained(self) -> None:
        """Let the flusher write what was queued; wait while much is still unwritten."""
        await trio.lowlevel.checkpoint()
        # The outbox announces no drain, so look again every millisecond.
        while self.outbox.queued_bytes > 1 << 20:  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.001)

    def expect(self, count: int) -> None:
        self.received, self.target, self.reached = 0, count, trio.Event()

    async def request(self, cluster: str, data: bytes) -> None:
        self.next_id += 1
        done = self.waiting[self.next_id] = trio.Event()
        with self.flusher.batch():  # written at once, not by the flusher task
            self.send(rp.Request.pack(self.next_id, cluster, data, 10_000))
        await done.wait()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flusher.run)
            nursery.start_soon(self.outbox.run_writer)
            nursery.start_soon(self.busy_poll.run)
            await self._read()
            nursery.cancel_scope.cancel()

    async def _read(self) -> None:
        reader, incoming = self.client.reader, EagerReader(self.client.stream)
        while True:
            data = await incoming.receive()
            if not data:
                return
            self.busy_poll.poke()
            with self.flusher.batch():
                for packet in reader.feed(data):
                    kind = type(packet)
                    if kind is rp.NodeRequest:
                        self.send(rp.Reply.pack(packet.id, True, packet.request))
                    elif kind is rp.NodeReply:
                        if packet.timed_out or not packet.success:
                            raise RuntimeError(f"request {packet.id} failed: {packet}")
                        self.waiting.pop(packet.id).set()
                    elif kind is rp.NodeBroadcast or kind is rp.Publish:
                        if kind is rp.Publish and packet.event == PROBE:
                            self.probed.set()
                            continue
                        self.received += 1
                        if self.received == self.target:
                            self.reached.set()


async def call(conn: MuxConnection, n: int, latencies: list[float]) -> None:
    """`n` requests one after another, each one's round trip appended to `latencies`."""
    for _ in range(n):
        t = time.perf_counter()
        await conn.request("bench", b"x")
        latencies.append(time.perf_counter() - t)


async def measure(port: int, node_pid: int, args: argparse.Namespace) -> dict:
    """The Go client's benchmark setup: one connection that serves cluster "bench", requests
    from it, subscribes to a topic and publishes on it, and broadcasts to its own cluster."""
    out: dict = {}
    conn = MuxConnection(await RelayStream.connect(port, cluster="bench"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        for concurrency in (1, 16):
            total = args.requests if concurrency > 1 else max(1, args.requests // 3)
            latencies: list[float] = []
            node0, client0, t0 = process_cpu_s(node_pid), time.process_time(), time.perf_counter()
            async with trio.open_nursery() as group:
                for i in range(concurrency):
                    group.start_soon(call, conn, total // concurrency + (i < total % concurrency),
                                     latencies)
            wall = time.perf_counter() - t0
            latencies.sort()
            label = f"requests_{concurrency}"
            out[f"{label}_per_s"] = round(total / wall)
            out[f"{label}_p50_us"] = round(latencies[len(latencies) // 2] * 1e6)
            out[f"{label}_node_cpu_us"] = round((process_cpu_s(node_pid) - node0) / total * 1e6, 1)
            out[f"{label}_client_cpu_us"] = round((time.process_time() - client0) / total * 1e6, 1)

        conn.send(rp.Subscribe.pack("bench-topic"))
        with trio.fail_after(30):  # the subscription is in place once a probe arrives
            while not conn.probed.is_set():
                conn.send(rp.Publish.pack("bench-topic", PROBE))
                with trio.move_on_after(0.05):
                    await conn.probed.wait()
        for name, packet in (("publish", lambda data: rp.Publish.pack("bench-topic", data)),
                             ("broadcast", lambda data: rp.Broadcast.pack("bench", data))):
            for size in (1, 1024):
                # From the first send until the connection received every message back.
                conn.expect(args.events)
                node0, t0 = process_cpu_s(node_pid), time.perf_counter()
                message = packet(b"e" * size)
                for start in range(0, args.events, 64):
                    with conn.flusher.batch():
                        for _ in range(min(64, args.events - start)):
                            conn.send(message)
                    await conn.drained()
                with trio.fail_after(60):
                    await conn.reached.wait()
                wall = time.perf_counter() - t0
                label = f"{name}_{size}b"
                out[f"{label}_per_s"] = round(args.events / wall)
                out[f"{label}_node_cpu_us"] = round(
                    (process_cpu_s(node_pid) - node0) / args.events * 1e6, 1)
        nursery.cancel_scope.cancel()
    return out


TUN_CLUSTER = "bench-tun"
TUN_GRANT = 4 * 1024 * 1024  # the member's initial credit
TUN_REGRANT = 1024 * 1024  # the member returns credit each time it has consumed this much
WRITE_BATCH = 64 * 1024  # the opener's write buffer


async def connect(port: int, cluster: str = "", deadline_s: float = 30.0) -> RelayStream:
    """A relay connection, retried until the node's relay accepts it."""
    with trio.fail_after(deadline_s):
        while True:
            try:
                return await RelayStream.connect(port, cluster=cluster)
            except iris.IrisError:
                await trio.sleep(0.1)


class TunnelMember:
    """A member connection of TUN_CLUSTER: confirms every inbound tunnel, grants credit, returns
    it as it consumes data, and counts whole messages."""

    def __init__(self, client: RelayStream) -> None:
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
                    await send(rp.TunAllow.pack(tid, consumed[tid]))
                    consumed[tid] = 0
            elif kind is rp.NodeTunInit:
                next_id += 1
                left[next_id] = consumed[next_id] = 0
                await send(rp.TunConfirm.pack(packet.build_id, next_id)
                           + rp.TunAllow.pack(next_id, TUN_GRANT))
            elif kind is rp.NodeTunClose:
                left.pop(packet.tunnel_id, None)
                consumed.pop(packet.tunnel_id, None)
            elif kind is rp.NodeClose:
                return


class TunnelOpener:
    """A connection that opens tunnels and sends within the credit the node grants it."""

    def __init__(self, client: RelayStream) -> None:
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
        await self.client.stream.send_all(rp.TunInit.pack(self.next_id, cluster, timeout_ms))
        await slot[0].wait()
        return slot[1]

    async def close(self, tid: int) -> None:
        self.closed.add(tid)
        await self.client.stream.send_all(rp.TunClose.pack(tid))

    async def send(self, tid: int, chunk_limit: int, message: bytes, count: int) -> None:
        """`count` copies of `message`: each starts once the credit covers its first chunk;
        its continuation chunks follow regardless (the protocol's rule)."""
        first = min(len(message), chunk_limit)
        packets = rp.tun_message_packets(tid, message, chunk_limit)
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


async def measure_tunnel(relay_a: int, pid_a: int, start_b: Callable[[], tuple[int, int]],
                         args: argparse.Namespace) -> dict:
    out: dict = {}
    relay_b, pid_b = start_b()
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
        for label, size, count in (("1k", 1024, args.tunnel),
                                   ("64k", 64 * 1024, max(1, args.tunnel // 20))):
            member.expect(count)
            cpu0 = (process_cpu_s(pid_a), process_cpu_s(pid_b), time.process_time())
            t0 = time.perf_counter()
            with trio.fail_after(300):
                await opener.send(confirm.id, confirm.chunk_limit, b"t" * size, count)
                await member.reached.wait()
            wall = member.reached_at - t0
            out[f"tunnel_{label}_msgs_per_s"] = round(count / wall)
            out[f"tunnel_{label}_mb_per_s"] = round(count * size / wall / 1e6, 1)
            cpu1 = (process_cpu_s(pid_a), process_cpu_s(pid_b), time.process_time())
            for name, before, after in zip(("sender_node", "receiver_node", "clients"), cpu0, cpu1,
                                           strict=True):
                out[f"tunnel_{label}_{name}_cpu_us"] = round((after - before) / count * 1e6, 1)
        await opener.close(confirm.id)
        nursery.cancel_scope.cancel()
    return out


@contextlib.contextmanager
def node_process(key_file: str, seed_port: int | None = None) -> Iterator[tuple[int, int, int]]:
    """An `iris node` process on free ports, joining through `seed_port` if given; yields
    (listen port, relay port, pid) and terminates the process on exit."""
    listen_port, relay_port = free_port(), free_port()
    command = [sys.executable, "-m", "iris.cli", "node", "--network-key-file", key_file,
               "--listen", f"127.0.0.1:{listen_port}", "--relay-port", str(relay_port)]
    if seed_port is not None:
        command += ["--seed", f"127.0.0.1:{seed_port}"]
    node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield listen_port, relay_port, node.pid
    finally:
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def baseline_echo(count: int) -> dict:
    """The machine's speed for the sequential figures: 1-byte round trips over loopback TCP
    between two threads of this process with blocking sockets (no relay, no node)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()

    def echo() -> None:
        while data := peer.recv(65536):
            peer.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    with client, peer:
        for sock in (client, peer):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        for _ in range(count):
            client.sendall(b"x")
            client.recv(1)
        wall = time.perf_counter() - t0
        client.shutdown(socket.SHUT_WR)
        thread.join()
    return {"baseline_tcp_echo_round_trips_per_s": round(count / wall)}


class _Echo:
    async def handle_request(self, data: bytes) -> bytes:
        return data


async def library_clients(port: int, count: int) -> dict:
    """The library client (`iris.relay.client.RelayClient`, a task per served request): a
    member of "bench-lib" echoing, a second connection sending 16 requests at a time."""
    async with RelayClient.open(port, cluster="bench-lib", handler=_Echo()), \
            RelayClient.open(port) as caller:
        await caller.request("bench-lib", b"warm", timeout=10)

        async def call(n: int) -> None:
            for _ in range(n):
                await caller.request("bench-lib", b"x", timeout=10)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(call, count // 16 + (i < count % 16))
        wall = time.perf_counter() - t0
    return {"requests_16_library_client_per_s": round(count / wall)}


def _next_packet(sock: socket.socket, reader: rp.NodeReader, packets: list) -> object | None:
    """The node's next packet on a blocking socket (None once the node ended the connection)."""
    while not packets:
        data = sock.recv(65536)
        if not data:
            return None
        packets.extend(reader.feed(data))
    return packets.pop(0)


def blocking_open(port: int, cluster: str = "") -> tuple[socket.socket, rp.NodeReader, list]:
    """What the Go client's `Connect` (no cluster) and `Register` (a cluster) do: a new TCP
    connection to the relay, the Init, and the node's Init answer (for a member, the node
    answers once its registration is in place). Returns the socket, its packet reader and the
    packets read after the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (Go's default)
    sock.sendall(rp.Init.pack(cluster=cluster))
    reader, packets = rp.NodeReader(), []
    answer = _next_packet(sock, reader, packets)
    if type(answer) is not rp.NodeInit:
        sock.close()
        raise RuntimeError(f"the node answered the Init with {answer!r}")
    return sock, reader, packets


def blocking_close(sock: socket.socket) -> None:
    """The Go client's `Close` / `Unregister`: a Close, then wait until the node has ended the
    connection (its Close, then the end of the stream)."""
    with sock:
        sock.sendall(rp.Close.pack())
        while sock.recv(65536):
            pass


def setup_rounds(port: int, cluster: str, count: int, rounds: int) -> tuple[list[float],
                                                                           list[float]]:
    """The Go client's BenchmarkConnect / BenchmarkRegister: `count` connections opened one
    after another and left open (the Go benchmark defers every Close and stops its clock before
    they run), then all closed one after another, outside the clock. One round to warm up, then
    `rounds` timed ones; per round, microseconds per open and per close."""
    opens: list[float] = []
    closes: list[float] = []
    for r in range(rounds + 1):
        socks = []
        t0 = time.perf_counter()
        for _ in range(count):
            socks.append(blocking_open(port, cluster)[0])
        t1 = time.perf_counter()
        for sock in socks:
            blocking_close(sock)
        t2 = time.perf_counter()
        if r:
            opens.append((t1 - t0) / count * 1e6)
            closes.append((t2 - t1) / count * 1e6)
        time.sleep(0.05)  # the node lets go of the last connections before the next round
    return opens, closes


# The original Go node's figures for the same setup (the Go client's BenchmarkConnect and
# BenchmarkRegister), measured on this machine on an earlier date.
GO_NODE_US = {"connect": 585, "register": 670}


def median(values: list[float]) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def connect_register(port: int, count: int, rounds: int) -> dict:
    """Connect (Init without a cluster) and Register (Init naming cluster "bench-register"; every
    connection of a round is a member of it) with the blocking-socket client: per-operation
    microseconds, the median of `rounds` rounds of `count` connections, next to the Go node's."""
    out: dict = {}
    for name, cluster in (("connect", ""), ("register", "bench-register")):
        opens, closes = setup_rounds(port, cluster, count, rounds)
        out[f"{name}_us"] = round(median(opens), 1)
        out[f"{name}_us_range"] = [round(min(opens), 1), round(max(opens), 1)]
        out[f"{name}_close_us"] = round(median(closes), 1)  # outside the Go benchmark's clock
        out[f"{name}_go_node_us"] = GO_NODE_US[name]
        out[f"{name}_vs_go_node"] = round(median(opens) / GO_NODE_US[name], 2)
    out["go_node_figures"] = ("the original Go node through the Go client's BenchmarkConnect "
                              "and BenchmarkRegister, measured on this machine on an earlier date")
    return out


def sequential_blocking(port: int, count: int, rounds: int = 5) -> dict:
    """Round trips one at a time by a client written with blocking socket calls (the Go
    client's BenchmarkReqRepLatency): it serves cluster "bench-seq" itself, so each round trip
    is request, request, reply, reply. `count` of them in `rounds` rounds after 100 to warm up:
    round trips per second over all, and the median round's microseconds per round trip."""
    sock, reader, packets = blocking_open(port, cluster="bench-seq")
    with sock:

        def round_trip(rid: int) -> None:
            sock.sendall(rp.Request.pack(rid, "bench-seq", b"x", 10_000))
            while True:
                packet = _next_packet(sock, reader, packets)
                if packet is None:
                    raise RuntimeError("the node closed the connection")
                if type(packet) is rp.NodeRequest:
                    sock.sendall(rp.Reply.pack(packet.id, True, packet.request))
                elif type(packet) is rp.NodeReply:
                    if packet.timed_out or not packet.success:
                        raise RuntimeError(f"request {rid} failed: {packet}")
                    return

        for rid in range(1, 101):  # warm up
            round_trip(rid)
        first, wall, per_round = 101, 0.0, []
        for r in range(rounds):
            n = count // rounds + (r < count % rounds)
            t0 = time.perf_counter()
            for rid in range(first, first + n):
                round_trip(rid)
            took = time.perf_counter() - t0
            first += n
            wall += took
            if n:
                per_round.append(took / n * 1e6)
    return {"requests_1_blocking_client_per_s": round(count / wall),
            "request_us": round(median(per_round), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--tunnel", type=int, default=20_000,
                        help="1 KiB tunnel messages (and a 20th as many of 64 KiB)")
    parser.add_argument("--connects", type=int, default=200,
                        help="connections per Connect or Register round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed rounds of the Connect, Register and sequential figures")
    parser.add_argument("--setup-only", action="store_true",
                        help="only the Connect, Register and sequential request figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as nodes:  # nodes stop first
        key_file = os.path.join(tmp, "net.key")
        with open(key_file, "wb") as f:
            f.write(iris.generate_network_key())
        listen_a, relay_a, pid_a = nodes.enter_context(node_process(key_file))

        def start_b() -> tuple[int, int]:
            """Node B joins A only for the tunnel phase: the phases before measure a one-node
            ring."""
            return nodes.enter_context(node_process(key_file, seed_port=listen_a))[1:]

        async def run() -> dict:
            await (await connect(relay_a)).stream.aclose()  # the relay is up
            result = baseline_echo(max(1, args.requests // 3))
            result.update(sequential_blocking(relay_a, max(1, args.requests // 3), args.rounds))
            result.update(connect_register(relay_a, args.connects, args.rounds))
            if args.setup_only:
                return result
            result.update(await measure(relay_a, pid_a, args))
            result.update(await library_clients(relay_a, args.requests))
            result.update(await measure_tunnel(relay_a, pid_a, start_b, args))
            return result

        result = trio.run(run)
    result.update(python=sys.version.split()[0], cpus=os.cpu_count())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
