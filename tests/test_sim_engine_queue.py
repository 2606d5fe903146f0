"""The simulator's event queue (1 ms buckets) runs events in exactly the order one heap of
all of them, ordered by (time, insertion), would: that order is what makes runs repeatable,
and what keeps the digests of the runs before the buckets."""

import heapq
import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from simulations.engine import Simulation

# An event: when it is due, and the delays (from its own time) of the events it queues when
# it runs. Delays of 0 and of less than a bucket queue events into the bucket being run; equal
# times are common (ties go by insertion order).
delays = st.lists(st.sampled_from([0.0, 0.0001, 0.0005, 0.001, 0.0015, 0.002, 0.25, 1.0, 3.0]),
                  max_size=3)
plans = st.lists(st.tuples(st.sampled_from([0.0, 0.0004, 0.001, 0.0011, 0.5, 0.5, 2.0, 7.25]),
                           delays), min_size=1, max_size=40)
ends = st.lists(st.sampled_from([0.0, 0.0005, 0.001, 0.3, 0.5, 1.0, 2.0, 100.0]), min_size=1,
                max_size=4)


def heap_order(plan, stops):
    """The reference: one heap of (time, insertion number), run up to each stop in turn."""
    heap, seq, ran = [], 0, []
    for when, then in plan:
        seq += 1
        heapq.heappush(heap, (when, seq, then))
    for end in stops:
        while heap and heap[0][0] <= end:
            when, number, then = heapq.heappop(heap)
            ran.append((when, number))
            for delay in then:
                seq += 1
                heapq.heappush(heap, (when + delay, seq, ()))
    return ran


def engine_order(plan, stops):
    sim = Simulation(seed=1)
    ran = []

    def queue(when, then):
        number = sim._seq + 1 - start
        sim.at(when, lambda: run(number, then))

    def run(number, then):
        ran.append((sim.now, number))
        for delay in then:
            queue(sim.now + delay, ())

    start = sim._seq
    for when, then in plan:
        queue(when, then)
    for end in stops:
        sim.run_until_time(max(end, sim.now))
    return ran


@settings(max_examples=300, deadline=None)
@given(plans, ends)
def test_events_run_in_the_order_of_one_heap(plan, ends):
    stops = sorted(ends)
    assert engine_order(plan, stops) == heap_order(plan, stops)


def test_an_event_due_before_the_bucket_being_run_runs_next():
    sim = Simulation(seed=1)
    ran = []
    sim.at(0.0105, lambda: (ran.append("late"), sim.at(0.0101, lambda: ran.append("earlier"))))
    sim.at(0.0109, lambda: ran.append("last"))
    sim.run_until_time(1.0)
    assert ran == ["late", "earlier", "last"]


def test_the_engine_benchmark_drives_its_trivial_cores():
    """`scripts/bench_engine.py` measures the engine alone through the attributes and inputs
    the engine uses of a core: if the engine comes to use more, the script must follow. 100
    cores for 5 simulated seconds: 5 wake-ups each, and a ping and its pong for each but the
    last few still in flight."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_engine.py"
    done = subprocess.run([sys.executable, str(script), "--nodes", "100", "--seconds", "5",
                           "--json"], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout)
    assert 1_400 <= result["events"] <= 1_500
    assert result["events_per_cpu_s_over_baseline"] > 0


def test_the_fifo_record_of_links_is_pruned_only_when_it_has_doubled(monkeypatch) -> None:
    """Links with messages in flight stay in the record (their order holds); links with none
    are forgotten; and when most links have something in flight (thousands of nodes under a
    partition), the record is copied again only once it has doubled, not at every message."""
    from simulations import engine

    monkeypatch.setattr(engine, "_LINKS_PRUNED_AT", 10)
    sim = Simulation(1)
    prunes = []
    for link in range(1000):  # every one still in flight
        before = sim._link_prune_at
        assert sim._in_order(link, 5.0) == 5.0
        if sim._link_prune_at != before:
            prunes.append(len(sim._link_last))
    assert len(sim._link_last) == 1000
    assert len(prunes) <= 7  # 11, 23, 47, ... : a copy per doubling
    # A later message on a link in flight still comes after the one before it.
    assert sim._in_order(3, 4.0) > 5.0
    # Once their messages have arrived, the links are forgotten at the next pruning.
    sim.now = 10.0
    for link in range(1000, 1000 + sim._link_prune_at):
        sim._in_order(link, 11.0)
    assert min(sim._link_last) >= 1000
