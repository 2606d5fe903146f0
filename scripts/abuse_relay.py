"""Abuse of a node's relay port: how an `iris node` process holds up, and whether ordinary
clients are still served meanwhile. Prints one JSON object.

    python scripts/abuse_relay.py [--scenario partial|idle|slow|all] [--json]

Loopback only; each scenario starts a fresh `iris node` (stderr, its log, to a temporary file),
is bounded in count and time, and closes what it opened, also on failure or Ctrl-C. Memory:
the node's VmRSS, sampled every 100 ms. A check is tried until it succeeds or --check-s has
passed; "ordinary clients": two `RelayClient` connections, a member of a cluster (echoing)
and a caller, one request round trip, then publish -> subscriber (timed after a probe).

- partial: --partial-clients connections send Init, then a Publish whose event declares
  --partial-bytes and as much of it as the node takes, never all (each stops one byte short,
  or after --stall-s without progress). RSS growth at peak, ordinary clients meanwhile, how
  many the node holds. Target: growth <= 300 MB.
- idle: the node has RLIMIT_NOFILE soft and hard --node-nofile (this script raises its own
  soft limit to its hard one); --idle-connections connections send nothing. --idle-wait s
  after the first: closed by the node (a peek gives b'', data (its Deny) or a reset), in the
  listener's accept queue (its Recv-Q), the rest held; the node's descriptors. Then: a second
  node joins through the first's overlay port within --join-s (its relay answers once it has
  joined), a status request, the ordinary clients; the log's bytes and 'Traceback' lines.
- slow: a raw client subscribes and, once a probe reached it, never reads; a raw publisher
  sends --slow-events events of 1 KiB on the topic (within --slow-s). Every 2 ms the node's
  queue for the subscriber is estimated from the kernel's socket queues (netlink sock_diag, as
  `ss`): event bytes the node took (sent, minus the Send-Q of the publisher's socket and the
  Recv-Q of the node's end) minus those in the kernel towards the subscriber (Send-Q of the
  node's end, Recv-Q of the subscriber's). Crossing: the first sample within 64 KiB (a read of
  the node) of its per-client limit (`out_bytes`; the packet that would exceed it is refused).
  Closed: the first sample where the node's end is no longer ESTABLISHED (its FIN waits behind
  the unread data: the subscriber's socket cannot tell). Also when the node logged "too slow",
  RSS growth at peak, relay counters. Targets: growth <= 150 MB, closed within 1 s of crossing.

Longer than 500 lines because it is one run with one JSON result: the three scenarios share
the node processes, the samplers and the ordinary-client checks defined here, and the slow
scenario's queue estimate needs its own small netlink reader.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import select
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import trio  # noqa: E402

import iris  # noqa: E402
from iris.relay import protocol as rp  # noqa: E402
from iris.relay.client import RelayClient  # noqa: E402

ESTABLISHED, LISTEN = 0x01, 0x0A  # TCP states as the kernel numbers them
READ_BYTES = 65536  # what the node reads of a client at once


# ------------------------------------------------------------------ the node process, kernel
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


@contextlib.contextmanager
def rss_peak(pid: int) -> Iterator[dict[str, float]]:
    """The process's RSS in MB now, at peak while in the block (sampled every 100 ms by a
    thread) and the growth, filled in as the block ends."""
    out = {"node_rss_before_mb": round(rss_mb(pid), 1), "node_rss_peak_mb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            with contextlib.suppress(OSError, StopIteration):
                out["node_rss_peak_mb"] = max(out["node_rss_peak_mb"], round(rss_mb(pid), 1))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["node_rss_growth_mb"] = round(max(0.0, out["node_rss_peak_mb"]
                                              - out["node_rss_before_mb"]), 1)


def listen_queue(port: int) -> int:
    """Connections in the accept queue of the IPv4 listener on `port` (its Recv-Q)."""
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == f"{LISTEN:02X}":
                return int(fields[4].split(":")[1], 16)
    return 0


class SockDiag:
    """The kernel's view of one loopback TCP socket, as `ss` gets it (NETLINK_SOCK_DIAG, an
    exact lookup by ports; /proc/net/tcp can take 50 ms to read on a busy machine)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4)  # NETLINK_SOCK_DIAG

    def query(self, sport: int, dport: int) -> tuple[int, int, int]:
        """(state, Send-Q, Recv-Q) of 127.0.0.1:sport -> 127.0.0.1:dport; state 0 if none."""
        lo = socket.inet_aton("127.0.0.1") + bytes(12)
        request = (struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
                   + struct.pack("!HH", sport, dport) + lo + lo
                   + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))  # any interface, no cookie
        self.sock.send(struct.pack("=IHHII", 16 + len(request), 20, 1, 0, 0) + request)
        reply = self.sock.recv(8192)  # SOCK_DIAG_BY_FAMILY (20), or NLMSG_ERROR: none such
        if struct.unpack_from("=H", reply, 4)[0] != 20:
            return 0, 0, 0
        rqueue, wqueue = struct.unpack_from("=II", reply, 72)  # after inet_diag_msg's id
        return reply[17], wqueue, rqueue


def log_figures(path: str) -> dict[str, int]:
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    return {"node_log_bytes": os.path.getsize(path), "node_log_lines": len(lines),
            "node_log_tracebacks": sum(b"Traceback" in line for line in lines),
            "node_log_warnings": sum(b" WARNING " in line for line in lines),
            "node_log_errors": sum(b" ERROR " in line for line in lines)}


@contextlib.contextmanager
def node_process(key_file: str, log: str, seed_port: int | None = None,
                 nofile: int | None = None, ready_s: float = 30.0
                 ) -> Iterator[tuple[int, int, int]]:
    """An `iris node` process on free ports (joining through `seed_port` if given), its stderr
    in `log`: (pid, overlay port, relay port) once its relay answers within `ready_s`."""
    listen, relay = free_port(), free_port()
    command = [sys.executable, "-m", "iris.cli", "node", "--network-key-file", key_file,
               "--listen", f"127.0.0.1:{listen}", "--relay-port", str(relay),
               "--join-timeout", str(ready_s)]
    if seed_port is not None:
        command += ["--seed", f"127.0.0.1:{seed_port}"]
    with open(log, "wb") as stderr:  # (the limit is set in the child, before exec)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=(
            None if nofile is None
            else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))))
    try:
        deadline = time.monotonic() + ready_s
        while not _answers(relay):
            if proc.poll() is not None:
                raise RuntimeError(f"the node exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no relay answer within {ready_s:g} s")
            time.sleep(0.1)
        yield proc.pid, listen, relay
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ raw clients
def raw_client(port: int, timeout: float = 5.0) -> tuple[socket.socket, rp.NodeReader]:
    """A blocking connection past its Init exchange (OSError if refused or closed)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(rp.Init.pack())
        reader, packets = rp.NodeReader(), list[rp.NodePacket]()
        while not packets:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the node closed the connection before its Init answer")
            packets = reader.feed(data)
        if type(packets[0]) is not rp.NodeInit:
            raise ConnectionError(f"the node refused: {packets[0]}")
        return sock, reader
    except BaseException:
        sock.close()
        raise


def _answers(port: int) -> bool:
    try:
        raw_client(port, timeout=1.0)[0].close()
        return True
    except OSError:
        return False


def peer_open(sock: socket.socket) -> bool:
    """Nothing from the node yet: no data (its Deny or Close), end of stream or reset. (Non-
    blocking from now: on a socket with a timeout, Python would wait before it peeks.)"""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


# ------------------------------------------------------------------------ ordinary clients
class _Echo:
    async def handle_request(self, data: bytes) -> bytes:
        return data


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


async def _ordinary(port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    async with RelayClient.open(port, cluster="abuse-echo", handler=_Echo()) as member, \
            RelayClient.open(port) as caller:
        out["connect_ms"] = _ms(t0)
        t0 = time.perf_counter()
        if await caller.request("abuse-echo", b"ping", timeout=10.0) != b"ping":
            raise RuntimeError("wrong reply")
        out["request_ms"] = _ms(t0)
        send, receive = trio.open_memory_channel[bytes](math.inf)

        async def on_event(event: bytes) -> None:
            send.send_nowait(event)

        await member.subscribe("abuse-check", on_event)
        while True:  # the subscription is in place once a probe arrives
            await caller.publish("abuse-check", b"probe")
            with trio.move_on_after(0.05):
                await receive.receive()
                break
        t0 = time.perf_counter()
        await caller.publish("abuse-check", b"timed")
        while await receive.receive() != b"timed":  # (probes still on their way)
            pass
        out["publish_ms"] = _ms(t0)
    return out


async def _status(port: int) -> dict[str, Any]:
    async with RelayClient.open(port) as client:
        relay: dict[str, Any] = (await client.status())["relay"]
        limits = relay.pop("limits")
        return {"relay": relay, "out_bytes_limit": limits["out_bytes"]}


def check(call: Callable[[], Awaitable[dict[str, Any]]], timeout: float) -> dict[str, Any]:
    """`call()`'s figures, tried again until it succeeds or `timeout` has passed: ok, the
    attempts, the time to success (or to giving up) and the first error."""
    t0 = time.perf_counter()
    deadline, attempts, first_error = t0 + timeout, 0, None

    async def bounded() -> dict[str, Any]:
        with trio.fail_after(max(0.1, deadline - time.perf_counter())):
            return await call()

    while True:
        attempts += 1
        try:
            figures = trio.run(bounded)
            return {"ok": True, "attempts": attempts, "ms": _ms(t0), "first_error": first_error,
                    **figures}
        except Exception as exc:  # a failure is a finding, not the end of the run
            error = f"{type(exc).__name__}: {exc}"[:200]
            first_error = first_error or error
            if time.perf_counter() > deadline - 0.1:
                return {"ok": False, "attempts": attempts, "ms": _ms(t0),
                        "first_error": first_error, "last_error": error}
            time.sleep(0.1)


# ------------------------------------------------------------------------------- scenarios
def scenario_partial(args: argparse.Namespace, key: str, tmp: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log = os.path.join(tmp, "partial.log")
    declared = args.partial_bytes
    header = bytes([rp.PUBLISH]) + rp.string("abuse") + rp.varint(declared)  # then the event
    chunk = memoryview(bytes(256 * 1024))
    with node_process(key, log) as (pid, _, relay), \
            contextlib.ExitStack() as sockets, rss_peak(pid) as rss, \
            selectors.DefaultSelector() as selector:
        sent: dict[socket.socket, int] = {}
        progress: dict[socket.socket, float] = {}
        t0 = time.monotonic()
        for _ in range(args.partial_clients):
            sock = sockets.enter_context(raw_client(relay)[0])
            sock.sendall(header)
            sock.setblocking(False)
            sent[sock], progress[sock] = 0, time.monotonic()
            selector.register(sock, selectors.EVENT_WRITE)
        full = stalled = failed = 0
        while selector.get_map() and time.monotonic() < t0 + args.partial_s:
            for selected, _ in selector.select(0.1):
                sock = selected.fileobj  # type: ignore[assignment]
                try:
                    sent[sock] += sock.send(chunk[:min(len(chunk), declared - 1 - sent[sock])])
                except BlockingIOError:
                    continue
                except OSError:
                    failed += 1
                    selector.unregister(sock)
                    continue
                progress[sock] = time.monotonic()
                if sent[sock] >= declared - 1:
                    full += 1
                    selector.unregister(sock)
            for sock in [s for s in sent if s in selector.get_map()]:
                if time.monotonic() - progress[sock] > args.stall_s:
                    stalled += 1
                    selector.unregister(sock)
        out.update(partial_mb_sent=round(sum(sent.values()) / 1e6, 1),
                   partial_clients_sent_all_but_1_byte=full, partial_clients_stalled=stalled,
                   partial_clients_send_failed=failed,
                   partial_clients_still_sending=len(selector.get_map()),
                   partial_send_s=round(time.monotonic() - t0, 2),
                   partial_held_before_checks=sum(map(peer_open, sent)))
        out["ordinary"] = check(lambda: _ordinary(relay), args.check_s)
        out["status"] = check(lambda: _status(relay), args.check_s)
        out["partial_held_after_checks"] = sum(map(peer_open, sent))
        out["checks_done_after_s"] = round(time.monotonic() - t0, 2)
    out.update(rss)
    out.update(log_figures(log))
    out["targets"] = {"growth_le_300_mb": out["node_rss_growth_mb"] <= 300,
                      "ordinary_clients_ok_first_try": out["ordinary"]["attempts"] == 1
                      and out["ordinary"]["ok"]}
    return out


def scenario_idle(args: argparse.Namespace, key: str, tmp: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log = os.path.join(tmp, "idle.log")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.idle_connections + 256:
        raise SystemExit(f"abuse_relay: the hard limit on open files ({hard}) is too low for "
                         f"{args.idle_connections} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        with node_process(key, log, nofile=args.node_nofile) as (pid, listen, relay), \
                contextlib.ExitStack() as sockets:
            out["node_fds_before"] = len(os.listdir(f"/proc/{pid}/fd"))
            idle: list[socket.socket] = []
            t0 = time.monotonic()
            for _ in range(args.idle_connections):
                with contextlib.suppress(OSError):
                    idle.append(sockets.enter_context(
                        socket.create_connection(("127.0.0.1", relay), timeout=2.0)))
            out["idle_connected"] = len(idle)
            out["idle_connect_s"] = round(time.monotonic() - t0, 2)
            time.sleep(max(0.0, t0 + args.idle_wait - time.monotonic()))

            def census(label: str) -> None:
                still, queued = sum(map(peer_open, idle)), listen_queue(relay)
                out[label] = {"at_s": round(time.monotonic() - t0, 1),
                              "closed_by_node": len(idle) - still,
                              "in_accept_queue": queued, "held_by_node": still - queued,
                              "node_fds": len(os.listdir(f"/proc/{pid}/fd"))}

            census("after_wait")
            t1 = time.perf_counter()
            at = round(time.monotonic() - t0, 1)
            try:
                with node_process(key, os.path.join(tmp, "idle-joiner.log"),
                                  seed_port=listen, ready_s=args.join_s):
                    out["second_node_join"] = {"ok": True, "at_s": at, "ms": _ms(t1)}
            except (RuntimeError, TimeoutError) as exc:
                out["second_node_join"] = {"ok": False, "at_s": at, "ms": _ms(t1),
                                           "error": str(exc)}
            at = round(time.monotonic() - t0, 1)
            out["status"] = {"at_s": at, **check(lambda: _status(relay), args.check_s)}
            at = round(time.monotonic() - t0, 1)
            out["ordinary"] = {"at_s": at, **check(lambda: _ordinary(relay), args.check_s)}
            census("end")
        out.update(log_figures(log))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    out["targets"] = {"second_node_joined": out["second_node_join"]["ok"],
                      **{f"{name}_ok_first_try": out[name]["ok"] and out[name]["attempts"] == 1
                         for name in ("status", "ordinary")},
                      "no_tracebacks": out["node_log_tracebacks"] == 0}
    return out


def scenario_slow(args: argparse.Namespace, key: str, tmp: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log = os.path.join(tmp, "slow.log")
    topic = "abuse-slow"
    with node_process(key, log) as (pid, _, relay), \
            contextlib.ExitStack() as stack:
        sub, reader = raw_client(relay)
        stack.enter_context(sub)
        pub = stack.enter_context(raw_client(relay)[0])
        sub.sendall(rp.Subscribe.pack(topic))
        deadline = time.monotonic() + 30
        while not any(type(p) is rp.Publish for p in reader.feed(
                sub.recv(65536) if select.select([sub], [], [], 0.05)[0] else b"")):
            if time.monotonic() > deadline:
                raise RuntimeError("the subscription never delivered a probe")
            pub.sendall(rp.Publish.pack(topic, b"probe"))
        time.sleep(0.3)
        while select.select([sub], [], [], 0)[0]:  # the probes still on their way
            sub.recv(65536)  # (from here on the subscriber never reads)
        limit = check(lambda: _status(relay), args.check_s)["out_bytes_limit"]
        sub_port, pub_port = sub.getsockname()[1], pub.getsockname()[1]
        packet = rp.Publish.pack(topic, b"e" * 1024)
        pending, sent, handed = memoryview(b""), 0, 0  # bytes sent, events handed to `pending`
        crossed = closed = None
        peak_queue = 0
        diag = SockDiag()
        stack.callback(diag.sock.close)
        pub.setblocking(False)
        with rss_peak(pid) as rss:
            t0, wall0 = time.monotonic(), time.time()
            done_at, next_sample = None, t0
            while time.monotonic() < t0 + args.slow_s:
                now = time.monotonic()
                if now >= next_sample:
                    next_sample = now + 0.002
                    state, node_sq, _ = diag.query(relay, sub_port)
                    if closed is None:
                        queued = (sent - diag.query(pub_port, relay)[1]
                                  - diag.query(relay, pub_port)[2]
                                  - node_sq - diag.query(sub_port, relay)[2])
                        peak_queue = max(peak_queue, queued)
                        if crossed is None and queued >= limit - READ_BYTES:
                            crossed = now
                        if state != ESTABLISHED:
                            closed = now
                    if done_at is not None and (closed is not None or now > done_at + 5):
                        break
                if not pending and handed < args.slow_events:
                    count = min(64, args.slow_events - handed)
                    pending, handed = memoryview(packet * count), handed + count
                if pending:
                    try:
                        n = pub.send(pending)
                        sent, pending = sent + n, pending[n:]
                    except BlockingIOError:
                        select.select([], [pub], [], 0.002)
                elif done_at is None:
                    done_at = time.monotonic()
                else:
                    time.sleep(0.001)
        out.update(slow_events_sent=sent // len(packet), slow_mb_sent=round(sent / 1e6, 1),
                   slow_send_s=round((done_at or time.monotonic()) - t0, 2),
                   out_bytes_limit=limit, queue_estimate_peak_mb=round(peak_queue / 2**20, 2),
                   publisher_held=peer_open(pub))
        for name, at in (("crossed", crossed), ("closed", closed)):
            out[f"{name}_after_s"] = None if at is None else round(at - t0, 3)
        with open(log) as f:  # the first "too slow" line's asctime (local time, ms)
            logged = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                      for line in f if "too slow" in line][:1]
        out["too_slow_logged_after_s"] = round(logged[0] - wall0, 3) if logged else None
        out["close_minus_cross_s"] = (None if crossed is None or closed is None
                                      else round(closed - crossed, 3))
        out["status_after"] = check(lambda: _status(relay), args.check_s)
    out.update(rss)
    out.update(log_figures(log))
    gap = out["close_minus_cross_s"]
    out["targets"] = {"growth_le_150_mb": out["node_rss_growth_mb"] <= 150,
                      "closed_within_1s_of_crossing": gap is not None and gap <= 1.0}
    return out


SCENARIOS = {"partial": scenario_partial, "idle": scenario_idle, "slow": scenario_slow}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--scenario", choices=[*SCENARIOS, "all"], default="all")
    add("--json", action="store_true", help="on one line (else indented)")
    add("--partial-clients", type=int, default=60)
    add("--partial-bytes", type=int, default=16_000_000, help="the event's declared size")
    add("--partial-s", type=float, default=60.0, help="at most this long to send them")
    add("--stall-s", type=float, default=2.0,
        help="a partial client stops once the node took nothing this long")
    add("--idle-connections", type=int, default=3000)
    add("--node-nofile", type=int, default=1024)
    add("--idle-wait", type=float, default=5.0, help="from the first idle connection to the count")
    add("--join-s", type=float, default=30.0)
    add("--slow-events", type=int, default=100_000)
    add("--slow-s", type=float, default=120.0)
    add("--check-s", type=float, default=15.0, help="each check is tried this long")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "net.key")
        with open(key, "wb") as f:
            f.write(iris.generate_network_key())
        for name in list(SCENARIOS) if args.scenario == "all" else [args.scenario]:
            t0 = time.monotonic()
            try:
                result[name] = SCENARIOS[name](args, key, tmp)
            except KeyboardInterrupt:  # (what it started is stopped by now)
                print("abuse_relay: interrupted", file=sys.stderr)
                return 130
            result[name]["scenario_s"] = round(time.monotonic() - t0, 1)
    result.update(python=sys.version.split()[0], cpus=os.cpu_count())
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
