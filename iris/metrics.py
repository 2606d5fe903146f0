"""A Prometheus endpoint for one node (and its relay): `iris node --metrics-port`.

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, node, 9464)       # relay=... if it has one
        # GET http://127.0.0.1:9464/metrics

What is counted, and where: `NodeMetrics` is the node's observer (`Node.observer`, see
`iris.runtime.node.NodeObserver`): it counts each request this node started by its outcome,
with the time its caller waited (`iris_request_duration_seconds`), each tunnel it opened,
each tunnel message it queued, and every event the core hands the node (requests served,
broadcasts, topic events, tunnels accepted and closed, tunnel messages received), as plain
ints on the node's own thread. The rest is read when scraped: links, leaf set, routing
table, trees, queued bytes, the core's, runtime's and relay's counters. Nothing is labelled
with a cluster or topic name (clients choose those: an unbounded number of series); labels
take a few fixed values each.

Counters of the core and runtime (`Node.status()["counters"]`) are split in two: the ones that
discard something (a message, a request, a graft, a relay client) are `iris_drops_total`,
labelled by the counter's own name (`reason`, the name `iris status` shows), so one panel,
`sum by (reason) (rate(iris_drops_total[5m]))`, shows everything this node threw away and why,
and an alert on it needs no list of names; every known reason is exported from the start (at
0), so rates work before the first drop. Every other counter (links closed and why, handler
errors, freezes, walks re-routed) is `iris_node_events_total{name}` (the relay's:
`iris_relay_events_total{name}`): a counter added to the code later shows up there without a
change here. Counter names are literals of the code, so both stay small.

Why the endpoint is served from trio and not by prometheus_client's `start_http_server`: that
server runs in a thread of its own, and a scrape would read the node's tables (links, leaf
set, routing table, the counters' dicts) while the node's thread changes them. Here the
scrape is one task of the node's own trio loop: `collect()` runs between two steps of the
node, so every value in one scrape is from the same instant, there are no locks, the
endpoint ends with the nursery that runs it, and `port=0` reports the port it got. A scrape
costs the loop about half a millisecond (~160 series, measured). The HTTP side is what a scraper
needs and no more: GET or HEAD of `/metrics` (or `/`), OpenMetrics when asked for, gzip when
accepted, one request per connection, a bounded request head read within a deadline, at most
`MAX_SCRAPERS` connections at once.
"""

from __future__ import annotations

import bisect
import gzip
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import trio
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from iris.core import BROKEN, LOST, NO_MEMBERS, OK, REFUSED, TIMEOUT
from iris.core import events as ev
from iris.errors import (
    ClosedError,
    IrisError,
    LimitExceededError,
    NoSuchClusterError,
    RemoteError,
    TimeoutError,
)
from iris.relay.server import RelayServer
from iris.runtime.accept import serve_listeners
from iris.runtime.log_limit import LogLimit
from iris.runtime.node import Node

__all__ = ["DROPS", "LATENCY_BUCKETS", "RELAY_DROPS", "NodeMetrics", "serve_metrics"]

log = logging.getLogger("iris.metrics")

# Seconds: 100 us (a request served in this process) to 10 s (beyond the default timeout, 5 s).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_OUTCOMES = ("ok", "remote_error", "no_members", "refused", "timeout", "closed")
_REQUEST_OUTCOME: dict[type[IrisError], str] = {
    RemoteError: "remote_error",
    NoSuchClusterError: "no_members",
    LimitExceededError: "refused",
    TimeoutError: "timeout",
    ClosedError: "closed",
}

# How a tunnel ended or failed to open: the core's codes (iris.core.messages) by name.
TUNNEL_CODES = {OK: "ok", NO_MEMBERS: "no_members", REFUSED: "refused", TIMEOUT: "timeout",
                BROKEN: "broken", LOST: "lost"}

# The counters of the core and the runtime that count something discarded, with what.
DROPS = {
    "requests_expired": "a request past its caller's deadline (not started, not passed on)",
    "requests_expired_in_queue": "a request that waited for a handler past its deadline",
    "requests_refused": "a request over its service's limits (the caller sees refused)",
    "request_duplicate_dropped": "a second copy of a routed request or tunnel opening",
    "late_replies": "a reply that came after its request timed out",
    "events_dropped": "a topic event over its subscription's queue limit",
    "broadcasts_dropped": "a broadcast over its service's queue limit",
    "floods_out_of_order": "a broadcast or event older than one already delivered",
    "flood_duplicate_dropped": "a second copy of a broadcast or event",
    "flood_no_tree": "a broadcast or event for a group with no tree here",
    "grafts_refused": "a graft over this node's limit on trees (the subscriber retries)",
    "unexpected_direct": "a direct message of a kind this node does not take",
    "send_queue_full": "a frame to a peer whose link queue is full",
    "sent_to_unknown_address": "a frame to a peer whose address is not known",
}
# The relay's, exported with the prefix "relay_".
RELAY_DROPS = {
    "connections_refused": "a client over the connection limit",
    "connections_evicted": "a client without an Init, closed to make room",
    "clients_too_slow": "a client that did not read its output",
    "clients_cut_off": "a client that broke the protocol",
    "init_timeouts": "a client that sent no Init in time",
    "packet_timeouts": "a client that left a packet unfinished",
    "requests_expired": "a request for a member client, past its deadline",
    "tunnel_packets_for_unknown_ids": "a tunnel packet for a tunnel the client does not have",
}

MAX_SCRAPERS = 16  # connections served at once; more are closed at once
READ_TIMEOUT_S = 10.0  # for the request head
MAX_HEAD_BYTES = 8192


class NodeMetrics:
    """The metrics of one node (and its relay, if given): a `NodeObserver` counting what passes
    through the node, and a prometheus_client collector of that and of the node's state.
    `attach()` makes it the node's observer (`detach()` ends that); `collect()` is meant to
    run on the node's trio thread (`serve_metrics` does)."""

    def __init__(self, node: Node, relay: RelayServer | None = None) -> None:
        self.node = node
        self.relay = relay
        self.requests = dict.fromkeys(REQUEST_OUTCOMES, 0)
        # Per outcome seen: the count in each latency bucket (not cumulative; the last is
        # +Inf) and the sum of seconds.
        self.latency: dict[str, tuple[list[int], list[float]]] = {}
        self.tunnel_opens = dict.fromkeys(TUNNEL_CODES.values(), 0)
        self.tunnel_latency: dict[str, tuple[list[int], list[float]]] = {}
        self.sent_counts = {"broadcast": 0, "publish": 0}
        self.received: dict[type[ev.Event], int] = {}  # events handed to the node, by type
        self.tunnels_closed = dict.fromkeys(TUNNEL_CODES.values(), 0)
        self.tunnel_received_bytes = 0
        self.tunnel_sent_messages = 0
        self.tunnel_sent_bytes = 0

    def attach(self) -> NodeMetrics:
        self.node.observer = self
        return self

    def detach(self) -> None:
        if self.node.observer is self:
            self.node.observer = None

    # ------------------------------------------------------------ NodeObserver
    def tunnel_sent(self, nbytes: int) -> None:
        self.tunnel_sent_messages += 1
        self.tunnel_sent_bytes += nbytes

    def request_done(self, error: IrisError | None, seconds: float) -> None:
        outcome = "ok" if error is None else _REQUEST_OUTCOME.get(type(error), "other")
        self.requests[outcome] = self.requests.get(outcome, 0) + 1
        _observe(self.latency, outcome, seconds)

    def tunnel_opened(self, code: int | None, seconds: float) -> None:
        outcome = "ok" if code is None else TUNNEL_CODES.get(code, "other")
        self.tunnel_opens[outcome] = self.tunnel_opens.get(outcome, 0) + 1
        _observe(self.tunnel_latency, outcome, seconds)

    def sent(self, what: str) -> None:
        self.sent_counts[what] = self.sent_counts.get(what, 0) + 1

    def events(self, events: list[ev.Event]) -> None:
        received = self.received
        for event in events:
            kind = type(event)
            received[kind] = received.get(kind, 0) + 1
            if isinstance(event, ev.TunnelMessage):
                self.tunnel_received_bytes += len(event.data)
            elif isinstance(event, ev.TunnelClosed):
                code = TUNNEL_CODES.get(event.code, "other")
                self.tunnels_closed[code] = self.tunnels_closed.get(code, 0) + 1

    # --------------------------------------------------------------- Collector
    def collect(self) -> Iterator[Metric]:
        node = self.node
        rt = node._runtime
        overlay = rt.node
        core = rt.core
        count = self.received.get

        info = InfoMetricFamily("iris_node", "This node: its id and overlay address.")
        info.add_metric([], {"id": f"{overlay.id:032x}", "address": f"{rt.host}:{rt.port}"})
        yield info
        yield _gauge("iris_node_active", "1 while the node is an active member of the ring.",
                     int(overlay.active))

        # Requests this node sent (as a caller), and served (as a member).
        yield _labelled_counter("iris_requests", "Requests this node sent, by outcome.",
                                "outcome", self.requests)
        yield _histogram("iris_request_duration_seconds",
                         "Time from sending a request to its outcome, at the caller.",
                         self.latency)
        yield _gauge("iris_requests_in_flight", "Requests this node sent that wait for an answer.",
                     len(node._waiting))
        yield _counter("iris_requests_served", "Requests handed to this node's handlers.",
                       count(ev.RequestReceived, 0))

        yield _counter("iris_broadcasts_sent", "Broadcasts this node sent.",
                       self.sent_counts["broadcast"])
        yield _counter("iris_broadcasts_received",
                       "Broadcasts handed to this node's handlers (one per registration).",
                       count(ev.BroadcastReceived, 0))
        yield _counter("iris_publishes_sent", "Topic events this node published.",
                       self.sent_counts["publish"])
        yield _counter("iris_publishes_received",
                       "Topic events handed to this node's subscriptions.",
                       count(ev.EventReceived, 0))

        # Tunnels.
        yield _labelled_counter("iris_tunnel_opens", "Tunnels this node opened, by outcome.",
                                "outcome", self.tunnel_opens)
        yield _histogram("iris_tunnel_open_duration_seconds",
                         "Time from opening a tunnel to its outcome, at the opener.",
                         self.tunnel_latency)
        yield _counter("iris_tunnels_accepted", "Tunnels peers opened to this node's clusters.",
                       count(ev.TunnelIncoming, 0))
        yield _labelled_counter("iris_tunnels_closed",
                                "Tunnels ended, by code (ok: closed in order; no_members, "
                                "refused, timeout: an opening that failed).",
                                "code", self.tunnels_closed)
        yield _gauge("iris_tunnels_open", "Tunnels this node holds an end of.", len(core.tunnels))
        yield _counter("iris_tunnel_messages_received", "Tunnel messages this node received.",
                       count(ev.TunnelMessage, 0))
        yield _counter("iris_tunnel_received_bytes", "Bytes of tunnel messages received.",
                       self.tunnel_received_bytes)
        yield _counter("iris_tunnel_messages_sent", "Tunnel messages this node sent.",
                       self.tunnel_sent_messages)
        yield _counter("iris_tunnel_sent_bytes", "Bytes of tunnel messages sent.",
                       self.tunnel_sent_bytes)

        # The ring and the groups.
        yield _gauge("iris_links", "Open connections to peers.", len(rt.links))
        yield _gauge("iris_leaf_set_size", "Nodes in the leaf set.", len(overlay.leaf))
        yield _gauge("iris_leaf_set_capacity", "Nodes the leaf set holds at most (L).",
                     2 * overlay.leaf.half)
        yield _gauge("iris_routing_table_entries", "Filled cells of the routing table.",
                     len(overlay.table))
        yield _gauge("iris_routing_table_rows", "Rows of the routing table in use.",
                     overlay.table.rows)
        yield _gauge("iris_known_addresses", "Peer addresses this node knows.",
                     len(rt.directory))
        sent = list(overlay.sent)
        yield _labelled_counter("iris_overlay_messages_sent",
                                "Overlay messages this node sent, by kind.", "kind",
                                {"maintenance": sent[0], "join": sent[1], "routed": sent[2]})
        yield _gauge("iris_trees", "Group trees this node is part of.", len(core.trees))
        yield _gauge("iris_clusters", "Clusters registered on this node.", len(core.services))
        yield _gauge("iris_topics", "Topics subscribed on this node.", len(core.topics))

        # Backpressure.
        pressure = rt.backpressure
        yield _gauge("iris_queued_bytes", "Bytes queued on the links, not yet written.",
                     pressure.queued)
        yield _gauge("iris_queued_high_water_bytes",
                     "Queued bytes above which requests, broadcasts and publishes wait.",
                     pressure._high)
        yield _gauge("iris_congested", "1 while queued bytes are above the high-water mark.",
                     int(pressure.congested))

        # The counters: drops by reason, and every other one by name.
        counters = {**rt.counters, **core.counters}  # (copies: one step of the C loop)
        drops = {reason: counters.pop(reason, 0) for reason in DROPS}
        relay = self.relay
        relay_counters = dict(relay.counters) if relay is not None else {}
        if relay is not None:
            drops.update((f"relay_{reason}", relay_counters.pop(reason, 0))
                         for reason in RELAY_DROPS)
        yield _labelled_counter("iris_drops",
                                "What this node discarded, by reason (the counter's name in "
                                "`iris status`).", "reason", drops)
        yield _labelled_counter("iris_node_events", "The node's other counters, by name.",
                                "name", counters)

        if relay is not None:
            yield _gauge("iris_relay_clients", "Connections of relay clients.",
                         len(relay.connections))
            yield _gauge("iris_relay_clients_max", "Relay connections taken at most.",
                         relay.max_connections)
            yield _gauge("iris_relay_memory_bytes",
                         "Relay memory in use: partly read packets and queued output.",
                         relay.memory.queued)
            yield _gauge("iris_relay_memory_limit_bytes", "The relay's memory budget.",
                         relay.limits.memory_bytes)
            yield _counter("iris_relay_connections", "Relay connections accepted.",
                           relay_counters.pop("connections", 0))
            yield _labelled_counter("iris_relay_events", "The relay's other counters, by name.",
                                    "name", relay_counters)


def _observe(into: dict[str, tuple[list[int], list[float]]], outcome: str,
             seconds: float) -> None:
    entry = into.get(outcome)
    if entry is None:
        entry = into[outcome] = ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
    entry[0][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1  # (le: a bucket's bound is in)
    entry[1][0] += seconds


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str,
                      values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _histogram(name: str, doc: str,
               observed: dict[str, tuple[list[int], list[float]]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["outcome"])
    bounds = [str(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
    for outcome, (counts, total) in sorted(observed.items()):
        cumulative, buckets = 0, []
        for bound, n in zip(bounds, counts, strict=True):
            cumulative += n
            buckets.append((bound, float(cumulative)))
        family.add_metric([outcome], buckets, sum_value=total[0])
    return family


# ------------------------------------------------------------------------------ serving
def registry_for(node: Node, relay: RelayServer | None = None,
                 process: bool = True) -> tuple[CollectorRegistry, NodeMetrics]:
    """A registry with the node's metrics (attached to the node) and, with `process`, the
    standard process, platform and garbage-collector metrics of prometheus_client."""
    registry = CollectorRegistry(auto_describe=False)
    metrics = NodeMetrics(node, relay).attach()
    registry.register(metrics)
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry, metrics


async def serve_metrics(node: Node, port: int, host: str = "127.0.0.1",
                        relay: RelayServer | None = None, *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the node's metrics (and its relay's) over HTTP on `host`:`port` until
    cancelled; `await nursery.start(serve_metrics, node, port, ...)` returns the bound port
    (`port` 0: one the system chose). A port that cannot be bound raises OSError before it
    starts. Prometheus scrapes `http://host:port/metrics`."""
    listeners = await trio.open_tcp_listeners(port, host=host or None)
    if port == 0 and len(listeners) > 1:  # each address family got a port of its own
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = listeners[0].socket.getsockname()[1]
    registry, metrics = registry_for(node, relay)
    scrapers = trio.CapacityLimiter(MAX_SCRAPERS)
    warnings = LogLimit(log)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            scrapers.acquire_nowait()
        except trio.WouldBlock:
            warnings.warning("busy", "metrics: %d scrapes at once already: closing one",
                             MAX_SCRAPERS)
            return
        try:
            await _serve_one(stream, registry)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the scraper went away
        finally:
            scrapers.release()

    log.info("metrics on http://%s:%d/metrics", host or "*", bound)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_listeners, handle, listeners, warnings)
            task_status.started(bound)
    finally:
        metrics.detach()


async def _serve_one(stream: trio.SocketStream, registry: CollectorRegistry) -> None:
    head = ""
    with trio.move_on_after(READ_TIMEOUT_S):
        while "\n\n" not in head and len(head) <= MAX_HEAD_BYTES:
            data = await stream.receive_some(4096)
            if not data:
                return
            head = (head + data.decode("latin-1")).replace("\r\n", "\n")
    if len(head.partition("\n\n")[0]) > MAX_HEAD_BYTES:
        await _respond(stream, "431 Request Header Fields Too Large", b"too large\n")
        return
    if "\n\n" not in head:
        return  # no complete request head in time: the connection just closes
    lines = head.split("\n")
    parts = lines[0].split()
    if len(parts) != 3:
        await _respond(stream, "400 Bad Request", b"bad request\n")
        return
    method, target, _ = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        await _respond(stream, "405 Method Not Allowed", b"GET or HEAD\n", ("Allow: GET, HEAD",))
        return
    if target.split("?", 1)[0] not in ("/metrics", "/"):
        await _respond(stream, "404 Not Found", b"the metrics are at /metrics\n")
        return
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    body = encoder(registry)  # (on the node's thread: one consistent snapshot)
    extra = [f"Content-Type: {content_type}"]
    if "gzip" in headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=1)
        extra.append("Content-Encoding: gzip")
    await _respond(stream, "200 OK", body, extra, head_only=method == "HEAD")


async def _respond(stream: trio.SocketStream, status: str, body: bytes,
                   headers: Sequence[str] | Iterable[str] = (), head_only: bool = False) -> None:
    lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}",
             "Connection: close", "", ""]
    await stream.send_all("\r\n".join(lines).encode("latin-1") + (b"" if head_only else body))
