"""The worker pool that runs application handlers."""

import trio
import trio.testing

from iris.runtime.workers import WorkerPool


async def test_workers_are_reused_and_the_pool_grows_only_under_load():
    done = []
    async with trio.open_nursery() as nursery:
        pool = WorkerPool(nursery, max_idle=4)

        async def job(arg):
            done.append(arg)

        for k in range(100):  # one at a time: one worker does them all
            pool.submit(job, k)
            await trio.testing.wait_all_tasks_blocked()
        assert done == list(range(100)) and pool.workers == 1

        for k in range(100, 110):  # ten at once that do not wait: still one worker
            pool.submit(job, k)
        await trio.testing.wait_all_tasks_blocked()
        assert done == list(range(110)) and pool.workers == 1

        release = trio.Event()

        async def blocking(arg):
            pool.spread()  # it waits: the jobs behind it need workers of their own
            await release.wait()
            done.append(arg)

        for k in range(10):  # ten at once, all blocked: ten workers
            pool.submit(blocking, k)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.workers == 10
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(done[110:]) == list(range(10))
        assert pool.workers == 4  # the rest went away once idle
        nursery.cancel_scope.cancel()
    assert pool.workers == 0  # parked workers end with the nursery
