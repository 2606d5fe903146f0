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


async def test_output_is_held_while_a_worker_runs_jobs_that_do_not_wait():
    """The output of jobs run one after another is held until the worker is done with them,
    or one of them waits (then at once, before it waits)."""
    log = []
    async with trio.open_nursery() as nursery:
        pool = WorkerPool(nursery, hold=lambda: log.append("hold"),
                          release=lambda: log.append("release"))

        async def job(arg):
            log.append(arg)

        for k in range(3):
            pool.submit(job, k)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["hold", 0, 1, 2, "release"]

        log.clear()
        go = trio.Event()

        async def waits(arg):
            pool.spread()
            log.append(arg)
            await go.wait()

        pool.submit(job, "a")
        pool.submit(waits, "b")
        pool.submit(job, "c")
        await trio.testing.wait_all_tasks_blocked()
        assert log[:4] == ["hold", "a", "release", "b"]  # released before "b" waits
        assert log[4:] == ["hold", "c", "release"]  # "c" on a worker of its own
        go.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
