"""The partition-heal record: bounded, oldest forgotten first, retried at a doubling interval."""

from overlay.lost_peers import INF, LostPeers, Sweep


def no_jitter(period):
    return period


def test_retries_double_up_to_the_cap():
    lost = LostPeers(size=4, forget_s=3600.0, first_retry_s=2.0, max_retry_s=10.0)
    assert lost.remember(7, now=0.0, jitter=no_jitter, left=16) == 2.0
    waits = []
    now = 0.0
    for _ in range(5):
        now = lost.soonest()
        assert lost.due(now, no_jitter) == [7]
        waits.append(lost.soonest() - now)
    assert waits == [4.0, 8.0, 10.0, 10.0, 10.0]
    assert lost.due(now, no_jitter) == []  # not due again before its next try


def test_a_full_record_forgets_the_peer_lost_longest_ago():
    lost = LostPeers(size=2, forget_s=3600.0, first_retry_s=2.0, max_retry_s=60.0)
    lost.remember(1, 0.0, no_jitter, left=16)
    lost.remember(2, 1.0, no_jitter, left=16)
    lost.remember(3, 2.0, no_jitter, left=16)
    assert list(lost) == [2, 3]
    lost.remember(2, 3.0, no_jitter, left=16)  # lost again: refreshed in place, nobody evicted
    assert list(lost) == [2, 3] and lost[2].lost_at == 3.0


def test_silent_peers_are_forgotten_and_an_empty_record_has_no_retry():
    lost = LostPeers(size=4, forget_s=100.0, first_retry_s=2.0, max_retry_s=60.0)
    lost.remember(5, 0.0, no_jitter, left=16)
    assert lost.due(101.0, no_jitter) == []
    assert not lost and lost.soonest() == INF


def test_gossip_window_and_early_retry_gap():
    lost = LostPeers(size=4, forget_s=3600.0, first_retry_s=2.0, max_retry_s=60.0)
    lost.remember(9, 10.0, no_jitter, left=16)
    assert lost.lost_within(9, 69.0, 60.0) and not lost.lost_within(9, 70.0, 60.0)
    assert not lost.lost_within(8, 11.0, 60.0)
    record = lost[9]
    assert not record.retry_early(12.0, gap=5.0)
    assert record.retry_early(15.0, gap=5.0)
    assert not record.retry_early(16.0, gap=5.0)


def test_several_losses_at_once_start_a_sweep_of_the_record_and_it_ends():
    """Three peers lost within the burst window look like a partition: one more lost peer is
    probed every sweep period, beside the doubling retries, until the sweep's end; losses
    spread out start none."""
    from collections import Counter

    def probes(sweep):
        lost = LostPeers(size=8, forget_s=3600.0, first_retry_s=2.0, max_retry_s=60.0,
                         sweep=sweep)
        lost.remember(1, 0.0, no_jitter, left=16)
        lost.remember(2, 20.0, no_jitter, left=16)
        lost.remember(3, 21.0, no_jitter, left=16)
        assert lost.next_sweep == INF  # three losses, but not within 10 s
        lost.remember(4, 22.0, no_jitter, left=16)
        sent, now = Counter(), 22.0
        while (now := lost.soonest()) < 300.0:
            sent.update(now for _ in lost.due(now, no_jitter))
        return sent

    sweep = Sweep(burst=3, burst_window_s=10.0, every_s=5.0, for_s=60.0)
    extra = sorted((probes(sweep) - probes(None)).elements())
    assert extra[0] == 27.0 and extra[-1] <= 22.0 + 60.0 + 5.0
    assert all(b - a == 5.0 for a, b in zip(extra, extra[1:], strict=False))
    assert len(extra) >= 11


def test_in_a_small_ring_losing_as_many_peers_as_are_left_starts_a_sweep():
    """Two nodes of four cut off from the other two lose two peers each, one fewer than the
    burst: with one peer left in the leaf set that is a partition too. Losing one of three
    (two left) is not."""
    sweep = Sweep(burst=3, burst_window_s=10.0, every_s=5.0, for_s=60.0)
    lost = LostPeers(size=8, forget_s=3600.0, first_retry_s=2.0, max_retry_s=60.0,
                     sweep=sweep)
    lost.remember(1, 0.0, no_jitter, left=2)
    assert lost.next_sweep == INF
    lost.remember(2, 1.0, no_jitter, left=1)
    assert lost.next_sweep == 6.0
    lone = LostPeers(size=8, forget_s=3600.0, first_retry_s=2.0, max_retry_s=60.0,
                     sweep=sweep)
    lone.remember(1, 0.0, no_jitter, left=0)  # a lone ring's seed, unreachable at the start
    assert lone.next_sweep == 5.0


def test_a_death_others_told_of_is_retried_once_and_makes_no_burst():
    """A peer dropped after others said it died (a crash several nodes agree on) is retried
    once, for a verifying probe lost to a partition, then left to the peers that found it
    themselves; three such losses at once are no partition and start no sweep."""
    sweep = Sweep(burst=3, burst_window_s=10.0, every_s=5.0, for_s=60.0)
    lost = LostPeers(size=8, forget_s=3600.0, first_retry_s=2.0, max_retry_s=60.0,
                     sweep=sweep)
    for peer in (1, 2, 3):
        assert lost.remember(peer, float(peer), no_jitter, left=16, told=True) == peer + 2.0
    assert lost.next_sweep == INF
    assert lost.due(5.0, no_jitter) == [1, 2, 3]
    assert lost.soonest() == INF  # no second retry
    assert 1 in lost  # still recorded: named alive, it is retried at once
    assert lost[1].retry_early(6.0, gap=1.0)

    lost.remember(4, 10.0, no_jitter, left=16)  # one of our own is retried for good
    for now in (12.0, 16.0, 24.0):
        assert lost.due(now, no_jitter) == [4]
    assert lost.soonest() == 40.0
