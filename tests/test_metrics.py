"""The Prometheus endpoint (`iris.metrics`): two nodes do some work, and a scrape over HTTP,
parsed with prometheus_client's own parser, shows exactly that work."""

from __future__ import annotations

import gzip
import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import iris
import iris.testing
from iris.metrics import DROPS, LATENCY_BUCKETS, RELAY_DROPS, serve_metrics
from iris.relay.client import RelayClient
from iris.relay.server import RelayServer
from iris.testing import wait_until


class Service:
    def __init__(self) -> None:
        self.broadcasts: list[bytes] = []

    async def handle_request(self, data: bytes) -> bytes:
        if data == b"fail":
            raise ValueError("asked to fail")
        if data == b"slow":
            await trio.sleep_forever()
        return b"echo:" + data

    async def handle_broadcast(self, data: bytes) -> None:
        self.broadcasts.append(data)

    async def handle_tunnel(self, tunnel) -> None:
        try:
            while True:
                await tunnel.send(b"back:" + await tunnel.receive())
        except iris.ClosedError:
            pass


def _fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


async def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the endpoint, by (name, labels), through a real HTTP client."""
    text = await trio.to_thread.run_sync(_fetch, port)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def http(port: int, request: bytes) -> tuple[bytes, bytes]:
    """A raw exchange: (head, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def test_a_scrape_shows_what_the_nodes_did(nursery):
    async with iris.testing.local_nodes(2) as (caller, member):
        service = Service()
        await member.register("svc", service)
        events: list[bytes] = []

        async def on_event(event: bytes) -> None:
            events.append(event)

        await member.subscribe("news", on_event)
        relay = RelayServer(member)
        relay_port = await nursery.start(relay.serve, 0, ("127.0.0.1",))
        caller_port = await nursery.start(serve_metrics, caller, 0)
        member_port = await nursery.start(serve_metrics, member, 0, "127.0.0.1", relay)
        assert caller_port and member_port and caller_port != member_port

        # A scrape before any work: every outcome and drop reason is there, at 0.
        before = await scrape(caller_port)
        for outcome in ("ok", "remote_error", "no_members", "refused", "timeout", "closed"):
            assert value(before, "iris_requests_total", outcome=outcome) == 0
        assert {reason for (name, labels) in before if name == "iris_drops_total"
                for _, reason in labels} == set(DROPS)
        assert value(before, "iris_links") >= 1
        assert value(before, "iris_leaf_set_size") == 1
        assert value(before, "iris_node_active") == 1

        # The work: 3 answered requests, 1 failing in the handler, 1 to no cluster, 1 timing
        # out; a broadcast, a publish, a tunnel with two messages each way.
        for i in range(3):
            assert await caller.request("svc", b"%d" % i) == b"echo:%d" % i
        with pytest.raises(iris.RemoteError):
            await caller.request("svc", b"fail")
        with pytest.raises(iris.NoSuchClusterError):
            await caller.request("nobody", b"x")
        with pytest.raises(iris.TimeoutError):
            await caller.request("svc", b"slow", timeout=0.2)
        await caller.broadcast("svc", b"to all")
        await caller.publish("news", b"extra")
        tunnel = await caller.tunnel("svc")
        for data in (b"one", b"three"):
            await tunnel.send(data)
            assert await tunnel.receive() == b"back:" + data
        await tunnel.close()
        # A relay client's request counts at the member's node (which sends it).
        async with RelayClient.open(relay_port) as client:
            assert await client.request("svc", b"relayed", timeout=2) == b"echo:relayed"
            await wait_until(lambda: events == [b"extra"] and service.broadcasts == [b"to all"])
            await wait_until(lambda: not member._runtime.core.tunnels)
            at_caller = await scrape(caller_port)
            at_member = await scrape(member_port)

        # The caller: requests by outcome, and as many latencies as outcomes.
        expected = {"ok": 3, "remote_error": 1, "no_members": 1, "timeout": 1, "refused": 0,
                    "closed": 0}
        for outcome, n in expected.items():
            assert value(at_caller, "iris_requests_total", outcome=outcome) == n
            if n:
                assert value(at_caller, "iris_request_duration_seconds_count",
                             outcome=outcome) == n
                assert value(at_caller, "iris_request_duration_seconds_bucket",
                             outcome=outcome, le="+Inf") == n
            else:  # (a histogram appears with its first observation)
                assert ("iris_request_duration_seconds_count",
                        frozenset({"outcome": outcome}.items())) not in at_caller
        buckets = [value(at_caller, "iris_request_duration_seconds_bucket", outcome="ok",
                         le=str(float(b))) for b in LATENCY_BUCKETS]
        assert buckets == sorted(buckets) and buckets[-1] == 3  # cumulative; 3 within 10 s
        assert value(at_caller, "iris_request_duration_seconds_bucket", outcome="timeout",
                     le="0.1") == 0  # it waited its 0.2 s
        assert 0.2 <= value(at_caller, "iris_request_duration_seconds_sum",
                            outcome="timeout") < 5
        assert value(at_caller, "iris_requests_in_flight") == 0
        assert value(at_caller, "iris_requests_served_total") == 0
        assert value(at_caller, "iris_broadcasts_sent_total") == 1
        assert value(at_caller, "iris_publishes_sent_total") == 1
        assert value(at_caller, "iris_tunnel_opens_total", outcome="ok") == 1
        assert value(at_caller, "iris_tunnel_open_duration_seconds_count", outcome="ok") == 1
        assert value(at_caller, "iris_tunnel_messages_received_total") == 2
        assert value(at_caller, "iris_tunnel_received_bytes_total") == len(b"back:oneback:three")
        assert value(at_caller, "iris_tunnel_messages_sent_total") == 2
        assert value(at_caller, "iris_tunnel_sent_bytes_total") == len(b"onethree")
        assert value(at_caller, "iris_tunnels_closed_total", code="ok") == 1
        assert value(at_caller, "iris_tunnels_open") == 0

        # The member: what it served and received, its relay, and its own relayed request.
        assert value(at_member, "iris_requests_served_total") == 3 + 1 + 1 + 1  # +1 relayed
        assert value(at_member, "iris_requests_total", outcome="ok") == 1
        assert value(at_member, "iris_broadcasts_received_total") == 1
        assert value(at_member, "iris_publishes_received_total") == 1
        assert value(at_member, "iris_tunnels_accepted_total") == 1
        assert value(at_member, "iris_tunnel_received_bytes_total") == len(b"onethree")
        assert value(at_member, "iris_tunnel_sent_bytes_total") == len(b"back:oneback:three")
        assert value(at_member, "iris_tunnels_closed_total", code="ok") == 1
        assert value(at_member, "iris_clusters") == 1 and value(at_member, "iris_topics") == 1
        assert value(at_member, "iris_relay_clients") == 1
        assert value(at_member, "iris_relay_connections_total") == 1
        assert value(at_member, "iris_relay_memory_limit_bytes") == relay.limits.memory_bytes
        for reason in RELAY_DROPS:
            assert value(at_member, "iris_drops_total", reason=f"relay_{reason}") == 0
        assert not any(name.startswith("iris_relay_") for name, _ in at_caller)

        # Both: the ring, the queues, and the process.
        for samples in (at_caller, at_member):
            assert value(samples, "iris_links") >= 1
            assert value(samples, "iris_leaf_set_size") == 1
            assert value(samples, "iris_leaf_set_capacity") == 16
            assert value(samples, "iris_routing_table_entries") >= 1
            assert value(samples, "iris_queued_bytes") >= 0
            assert value(samples, "iris_queued_high_water_bytes") > 0
            assert value(samples, "iris_congested") == 0
            assert value(samples, "iris_overlay_messages_sent_total", kind="routed") > 0
            assert ("process_resident_memory_bytes", frozenset()) in samples
            # No label carries a cluster or topic name.
            assert not any(v in ("svc", "news", "nobody") for _, labels in samples
                           for _, v in labels)

        nursery.cancel_scope.cancel()
    assert caller.observer is None and member.observer is None  # detached when it ended


async def test_the_http_side(nursery):
    async with iris.testing.local_nodes(1) as (node,):
        port = await nursery.start(serve_metrics, node, 0)
        head, body = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                      b"Accept-Encoding: gzip\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Encoding: gzip" in head
        assert b"iris_requests_total" in gzip.decompress(body)
        head, body = await http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == b""
        head, body = await http(port, b"GET /metrics HTTP/1.1\r\n"
                                      b"Accept: application/openmetrics-text\r\n\r\n")
        assert b"application/openmetrics-text" in head and body.endswith(b"# EOF\n")
        head, _ = await http(port, b"GET /other HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404")
        head, _ = await http(port, b"POST /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405")
        head, _ = await http(port, b"nonsense\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400")
        head, _ = await http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 10_000 + b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431")
        # A port in use fails before the endpoint starts.
        with pytest.raises(OSError):
            await nursery.start(serve_metrics, node, port)
        nursery.cancel_scope.cancel()


async def test_iris_node_serves_metrics_on_its_metrics_port(tmp_path):
    """`iris node --metrics-port`: the endpoint of a real node process, scraped."""
    import socket
    import subprocess
    import sys

    from iris.testing import retry

    key = tmp_path / "k"
    key.write_bytes(iris.generate_network_key())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "iris", "node", "--network-key-file", str(key), "--no-relay",
         "--metrics-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(30):
            samples = await retry(lambda: scrape(port), errors=(OSError,))
        assert value(samples, "iris_node_active") == 1
        assert value(samples, "iris_requests_total", outcome="ok") == 0
    finally:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
