"""How late a link's records arrive (`overlay.transit`), sans-IO, and a request that took
seconds to cross a link is not started after its caller gave up."""

import pytest
import trio
from conftest import wait_until

import iris
import iris.testing
from overlay.link import Session
from overlay.transit import BUCKET_MS, BUCKETS, WRAP, TransitDelay, clock_field


def test_the_base_is_the_links_best_and_a_record_is_late_by_what_it_exceeds_it():
    """The sender's clock runs 1,000 s ahead of ours; records take 2-5 ms, one 3.2 s (a
    retransmitted segment)."""
    transit = TransitDelay()
    offset = 1000.0
    assert transit.extra(clock_field(10.0 + offset), 10.005) == 0.0  # the first sets the base
    assert transit.extra(clock_field(11.0 + offset), 11.002) == 0.0  # a better one lowers it
    assert transit.extra(clock_field(12.0 + offset), 12.004) == pytest.approx(0.002)
    assert transit.extra(clock_field(13.0 + offset), 16.202) == pytest.approx(3.2)


def test_the_clock_field_wraps_and_the_difference_does_not_care():
    wrap_s = WRAP / 1000
    transit = TransitDelay()
    assert transit.extra(clock_field(wrap_s - 0.5), 7.0) == 0.0  # the sender's field is near 2**32
    assert transit.extra(clock_field(wrap_s + 0.5), 8.0) == 0.0  # ... and wrapped to near 0
    assert transit.extra(clock_field(wrap_s + 1.5), 10.0) == pytest.approx(1.0)


def test_the_base_follows_clocks_that_drift_apart():
    """Our clock gains 1 ms a minute on the sender's: the base is the least difference of the
    last few minutes only, so what a healthy link shows stays near 0 instead of growing with
    the drift."""
    transit = TransitDelay()
    minutes = BUCKETS * 4
    lateness = []
    for second in range(0, minutes * BUCKET_MS // 1000, 5):
        drift = second / 60 * 0.001
        lateness.append(transit.extra(clock_field(float(second)), second + 0.002 + drift))
    assert max(lateness) <= (BUCKETS + 1) * 0.001 + 1e-9
    assert lateness[-1] >= 0.0


def test_a_record_carries_its_senders_clock_inside_the_seal():
    key_a, key_b = bytes(32), bytes(range(32))
    sender, receiver = Session(key_a, key_b), Session(key_b, key_a)
    record = sender.seal_batch([b"one", b"", b"three"], clock_field(1234.5678))
    size = int.from_bytes(record[:4], "big")
    assert size == len(record) - 4
    assert receiver.open_batch(record[4:]) == (1234567, [b"one", b"", b"three"])


async def test_a_request_that_took_seconds_to_cross_a_link_is_not_started(monkeypatch):
    """The caller's records are stamped as if sent 3 s before they were (what a segment lost
    and retransmitted after doubling timeouts looks like to the member): a request with 1 s
    to live is dropped unstarted, and the caller times out; stamped right again, the next one
    runs."""
    import iris.runtime.driver as driver

    ran = []

    class Echo:
        async def handle_request(self, data):
            ran.append(data)
            return data

    skew = {"s": 0.0}
    monkeypatch.setattr(driver, "clock_field", lambda now: clock_field(now - skew["s"]))
    async with iris.testing.local_nodes(2) as (member, caller):
        await member.register("svc", Echo())
        for _ in range(3):  # the member's side of the link learns its best
            assert await caller.request("svc", b"warm", timeout=10) == b"warm"
        skew["s"] = 3.0
        with pytest.raises(iris.TimeoutError):
            await caller.request("svc", b"late", timeout=1.0)
        counters = member._runtime.core.state.counters
        await wait_until(lambda: counters.get("requests_expired"))
        skew["s"] = 0.0
        with trio.fail_after(10):
            assert await caller.request("svc", b"fresh", timeout=5) == b"fresh"
        assert ran == [b"warm"] * 3 + [b"fresh"]
