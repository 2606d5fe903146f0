"""Helpers for testing applications against real nodes: many nodes in one trio process.

    async with iris.testing.local_nodes(5) as nodes:          # in-memory links
        await nodes[0].register("echo", handler)
        assert await nodes[3].request("echo", b"x") == ...

    async with iris.testing.local_nodes(5, transport="tcp"):  # loopback TCP

Every node runs the full protocol (handshake, sealed frames, the same cores); `local_nodes`
returns once every node's leaf set is exactly right, `wait_until` waits for any condition, and
`retry` tries an async call until it succeeds. They give up with `trio.TooSlowError` at the
caller's deadline (`with trio.fail_after(s):` around them), or after a default limit when the
caller set none, so that a test waiting for something that never comes fails instead of hanging.

`wait_for_members` surveys a cluster until the members that answer surveys are all there (a
cluster's members are grafted, or grafted again after a fault).

`local_nodes` runs over an in-memory network, and `LocalNodes` injects faults for chaos tests of
an application's own handlers: a partition (`partition`, `heal`), slow links (`degrade`: delay,
and loss as TCP shows it, late bytes in order), a crash (`crash`), and a pause (`pause`,
`resume`: as SIGSTOP and SIGCONT, the node runs nothing meanwhile).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from iris.runtime.node import Node, open_node
from iris.runtime.pause import Pause
from iris.runtime.survey import SurveyResult
from iris.runtime.transport import Address, MemoryNetwork

WAIT_LIMIT_S = 10.0  # for `wait_until`, when the caller set no deadline
CONVERGE_LIMIT_S = 30.0  # for `local_nodes` (joins one by one, then exact leaf sets), likewise


def default_limit(limit: float) -> float:
    """`limit` when the calling task has no deadline, else no limit of our own: the caller's
    deadline (a `trio.fail_after` around the wait, longer or shorter) is the one that holds."""
    return limit if trio.current_effective_deadline() == math.inf else math.inf


async def wait_until(predicate: Callable[[], Any], poll: float = 0.01) -> None:
    """Return as soon as `predicate()` holds; raise trio.TooSlowError at the caller's
    deadline, or after WAIT_LIMIT_S when it set none."""
    with trio.fail_after(default_limit(WAIT_LIMIT_S)):
        await _poll(predicate, poll)


async def retry(attempt: Callable[[], Awaitable[Any]], *,
                accept: Callable[[Any], bool] = lambda result: True,
                errors: tuple[type[BaseException], ...] = (), pause: float = 0.05) -> Any:
    """Await `attempt()` until it returns a result `accept` takes (an exception in `errors`
    counts as "not yet") and return that result; raise trio.TooSlowError at the caller's
    deadline, or after WAIT_LIMIT_S when it set none. For readiness that only another try can
    reveal: a service reachable again after a heal, a process that starts listening. `pause`
    spaces the tries so they do not flood what they ask."""
    with trio.fail_after(default_limit(WAIT_LIMIT_S)):
        while True:
            try:
                result = await attempt()
            except errors:
                pass
            else:
                if accept(result):
                    return result
            await trio.sleep(pause)


async def wait_for_members(
    node: Node, cluster: str, members: int,
    timeout: float = 2.0,  # noqa: ASYNC109 - each survey's own deadline, not a cancel scope
    data: bytes = b"",
) -> SurveyResult:
    """Survey `cluster` from `node` (each survey with `timeout`) until at least `members`
    members answer it and no member the tree knows of is missing; return that survey's
    result. Raise trio.TooSlowError at the caller's deadline, or after WAIT_LIMIT_S when it
    set none. The members must answer surveys (`handle_survey`)."""
    from iris.errors import NoSuchClusterError, TimeoutError

    result: SurveyResult = await retry(
        lambda: node.survey(cluster, data, timeout),
        accept=lambda r: r.complete and len(r.answers) >= members,
        errors=(NoSuchClusterError, TimeoutError))
    return result


async def _poll(predicate: Callable[[], Any], interval: float) -> None:
    # The predicate may read any state (a node's, a handler's), and nothing signals a change of
    # that; so it is polled.
    while not predicate():  # noqa: ASYNC110 - no event to wait on: see above
        await trio.sleep(interval)


def converged(nodes: list[Node]) -> bool:
    """Every node is active and its leaf set holds exactly its true neighbours among `nodes`."""
    ids = sorted(node.id for node in nodes)
    n = len(ids)
    for node in nodes:
        core = node._runtime.node
        if not core.active:
            return False
        half = core.leaf.half
        i = ids.index(node.id)
        count = min(half, n - 1)
        right = [ids[(i + 1 + k) % n] for k in range(count)]
        left = [ids[(i - 1 - k) % n] for k in range(count)]
        if core.leaf.right != right or core.leaf.left != left:
            return False
    return True


class LocalNodes(list[Node]):
    """The nodes `local_nodes` started, and the faults of their process and in-memory network,
    for chaos tests of an application's own handlers:

        async with iris.testing.local_nodes(6) as nodes:
            nodes.partition(nodes[:3], nodes[3:])   # silent: bytes stall, dials go unanswered
            ...                                     # what the application does meanwhile
            nodes.heal()
            await iris.testing.wait_until(lambda: iris.testing.converged(nodes))
    """

    def __init__(self, network: MemoryNetwork | None) -> None:
        super().__init__()
        self._network = network

    def partition(self, *groups: Sequence[Node]) -> None:
        """Cut the network between the groups (a node in no group is cut off from all)."""
        self._memory().partition([_addresses(group) for group in groups])

    def degrade(self, delay: float = 0.0, loss: float = 0.0,
                between: tuple[Sequence[Node], Sequence[Node]] | None = None,
                seed: int | None = None) -> None:
        """Slow the links between the two groups of nodes (both ways), or every link: each
        write arrives `delay` seconds later (a request and its reply cross at least two
        links), and each TCP segment is lost with probability `loss`, which the application
        sees as TCP shows it: the bytes come late (sent again after a retransmission timeout
        of at least 200 ms), in order, never missing. `seed` fixes the losses drawn. A later
        call replaces what earlier ones set for the same links; `heal` ends it all. What is
        modelled and what is not: `MemoryNetwork.degrade`."""
        ends = None if between is None else (_addresses(between[0]), _addresses(between[1]))
        self._memory().degrade(delay, loss, ends, seed)

    def heal(self) -> None:
        """End the partition and the degradation: every link whole and undelayed again."""
        self._memory().heal()

    def crash(self, node: Node) -> None:
        """Stop `node` as a killed process stops: it tells nobody, its connections end, its
        address refuses connections; the others find out by their failure detection. A paused
        node can be crashed too (as `kill -9` ends a stopped process)."""
        node._crash()
        _continue(node)  # a paused one's held tasks end at their next checkpoint

    def pause(self, node: Node) -> None:
        """Stop `node` as SIGSTOP stops a process: it runs nothing (no timer, no handler, not
        even one halfway through, no read) until `resume`; bytes sent to it pile up unread
        (its peers' writes are not refused); its peers hear nothing and may declare it
        failed. Calling its API meanwhile raises RuntimeError. See iris.runtime.pause."""
        self._pause_of(node).pause()

    def resume(self, node: Node) -> None:
        """Continue `node` as SIGCONT does: it finds its backlog, and that its clock jumped;
        a request that waited for it past its caller's deadline is dropped unstarted (the
        runtime's freeze watch, as in a real process)."""
        self._pause_of(node).resume()

    def _pause_of(self, node: Node) -> Pause:
        self._memory()
        pause = node._runtime.pause
        assert pause is not None  # every node on the memory network has one
        return pause

    def _memory(self) -> MemoryNetwork:
        if self._network is None:
            raise RuntimeError("these faults need local_nodes(transport='memory')")
        return self._network


def _continue(node: Node) -> None:
    pause = node._runtime.pause
    if pause is not None:
        pause.resume()


def _addresses(nodes: Sequence[Node]) -> list[Address]:
    return [node.address for node in nodes]


@asynccontextmanager
async def local_nodes(count: int, transport: str = "memory", network_key: bytes | None = None,
                      on_join: Callable[[], None] | None = None,
                      **options: Any) -> AsyncIterator[LocalNodes]:
    """Start `count` nodes (the rest join through the first) and yield them once converged.
    `on_join` is called as each node has joined (progress reports)."""
    from iris import generate_network_key

    if transport not in ("memory", "tcp"):
        raise ValueError("transport is 'memory' or 'tcp'")
    key = network_key or generate_network_key()
    network = MemoryNetwork() if transport == "memory" else None
    nodes = LocalNodes(network)
    stop = trio.Event()

    async def run(seeds: list[Any], task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        link = network.transport() if network is not None else None
        async with open_node(network_key=key, seeds=seeds, transport=link, **options) as node:
            nodes.append(node)
            task_status.started()
            await stop.wait()

    async with trio.open_nursery() as nursery:
        await nursery.start(run, [])
        for _ in range(count - 1):
            await nursery.start(run, [nodes[0].address])
            if on_join is not None:
                on_join()
        with trio.fail_after(default_limit(CONVERGE_LIMIT_S)):
            await _poll(lambda: converged(nodes), 0.01)
        try:
            yield nodes
        finally:
            for node in nodes:  # a node still paused leaves as the others do
                _continue(node)
            stop.set()
