"""Network faults of `iris.testing`'s in-memory network: what an application's own chaos tests
use. A partition is silent (bytes stall, dials go unanswered); after the heal the ring is whole
again and requests across the former cut are served."""

import pytest
import trio
from conftest import retry

import iris
import iris.testing
from iris.testing import converged, local_nodes, wait_until


class Echo:
    async def handle_request(self, data):
        return data


async def served(caller, cluster):
    try:
        return await caller.request(cluster, b"?", timeout=1) == b"?"
    except iris.IrisError:
        return False


@pytest.mark.slow
async def test_a_partition_cuts_requests_across_it_and_the_heal_brings_them_back():
    async with local_nodes(6) as nodes:
        await nodes[4].register("svc", Echo())
        assert await served(nodes[0], "svc")
        nodes.partition(nodes[:3], nodes[3:])
        with trio.fail_after(60):  # each side declares the other failed
            await retry(lambda: served(nodes[0], "svc"), accept=lambda ok: not ok, pause=0.1)
            await wait_until(lambda: all(
                len(n._runtime.node.leaf.members()) == 2 for n in nodes), poll=0.1)
        assert await served(nodes[3], "svc")  # the member's side carries on
        nodes.heal()
        healed_at = trio.current_time()
        with trio.fail_after(60):
            await retry(lambda: served(nodes[0], "svc"), accept=bool, pause=0.1)
            back = trio.current_time() - healed_at
            await wait_until(lambda: converged(nodes), poll=0.1)
        assert back < 30, f"requests served again only {back:.1f} s after the heal"


async def test_faults_need_the_memory_network():
    async with local_nodes(2, transport="tcp") as nodes:
        with pytest.raises(RuntimeError, match="memory"):
            nodes.partition(nodes[:1], nodes[1:])


@pytest.mark.slow
async def test_a_crashed_member_is_found_out_and_its_cluster_served_by_the_others():
    async with local_nodes(6) as nodes:
        for member in (nodes[1], nodes[4]):
            await member.register("svc", Echo())
        dead = nodes[4]
        nodes.crash(dead)
        crashed_at = trio.current_time()
        with pytest.raises(iris.ClosedError):
            await dead.request("svc", b"?", timeout=1)
        survivors = [n for n in nodes if n is not dead]
        with trio.fail_after(60):  # no Leave was sent: failure detection finds it
            await wait_until(lambda: all(
                dead.id not in n._runtime.node.leaf.members() for n in survivors), poll=0.1)
            found_out = trio.current_time() - crashed_at
            await wait_until(lambda: converged(survivors), poll=0.1)
            for _ in range(10):
                await retry(lambda: served(nodes[0], "svc"), accept=bool, pause=0.1)
        # Found out by probes, not told: a Leave would have taken it out of every leaf set at
        # once; a probe waits 1 s for its answer, twice.
        assert found_out > 1.0, f"gone from the leaf sets after {found_out:.1f} s"
