"""The messaging layer at scale in the simulator: every pattern, churn, partition, tunnels."""

import pytest

from iris.core import LOST, NO_MEMBERS, OK, TIMEOUT, tunnel_of
from iris.core import events as ev
from iris.core.messages import other_end
from simulations.messaging import (
    MessagingOptions,
    make_messaging_sim,
    run_tunnel,
    scenario_messaging,
    scenario_messaging_churn,
    scenario_messaging_partition,
    setup_groups,
)
from simulations.scenarios import build_ring


def small_world(nodes=120, seed=3):
    opts = MessagingOptions(nodes=nodes, seed=seed)
    sim, work = make_messaging_sim(opts)
    assert build_ring(sim, opts)["converged"]
    setup_groups(sim, work, opts)
    return sim, work


@pytest.mark.slow
def test_stable_ring_every_pattern_exactly_once():
    opts = MessagingOptions(nodes=300, seed=2, requests=20_000, request_rate=2000,
                            tunnel_messages=2000, tunnel_big_mib=1)
    r = scenario_messaging(opts)
    assert r["request_success_ratio"] == 1.0
    assert r["request_duplicates"] == 0 and r["request_misdelivered"] == 0
    assert r["balance_dispersion"] <= 1.6  # as even as picking members at random
    assert r["broadcast_delivery_ratio"] == 1.0 and r["broadcast_duplicates"] == 0
    assert r["publish_delivery_ratio"] == 1.0 and r["publish_duplicates"] == 0
    assert r["publish_order_violations"] == 0
    assert r["tunnel_in_order"] and r["tunnel_big_intact"]
    assert r["checks_passed"]


def test_request_to_a_cluster_without_members_fails_at_once():
    sim, work = small_world()
    requester = sim.random_active()
    work.members["nobody"] = set()
    work.request(requester, "nobody", timeout=30.0)
    sim.run_for(2.0)
    (record,) = [r for r in work.requests.values() if r.cluster == "nobody"]
    assert record.status == NO_MEMBERS  # well before the 30 s timeout


def test_request_times_out_when_the_only_member_dies():
    sim, work = small_world()
    (member,) = work.members["c0"]  # the cluster of size 1
    sim.crash(member)
    requester = sim.random_active()
    work.request(requester, "c0", timeout=3.0)
    sim.run_for(5.0)
    record = [r for r in work.requests.values() if r.cluster == "c0"][-1]
    assert record.status in (TIMEOUT, NO_MEMBERS)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_requests_find_the_members_while_a_dead_root_is_replaced(seed):
    """The root of a cluster's tree crashes while requests keep coming. The node that takes
    over as root knows no tree until the members below the dead root re-graft (after their
    own verifying probe): it must wait for them, not answer "no members"."""
    from iris.core import OK, cluster_group

    sim, work = small_world(nodes=80, seed=seed)
    group = cluster_group("c1")  # three members
    (root,) = [n for n in sim.active if sim.nodes[n].is_root(group)]
    sim.crash(root)
    live = [n for n in sim.active if n != root]
    for i in range(300):  # one request every 50 ms for 15 s, from everywhere
        sim.at(sim.now + 0.05 * i,
               lambda i=i: work.request(live[i % len(live)], "c1", timeout=10.0))
    sim.run_for(30.0)
    outcomes = [r.status for r in work.requests.values() if r.cluster == "c1"]
    assert len(outcomes) == 300 and NO_MEMBERS not in outcomes
    assert outcomes.count(OK) == 300


def test_tunnel_of_100000_messages_stays_in_order_within_the_window():
    sim, work = small_world(nodes=60, seed=5)
    r = run_tunnel(sim, work, "c9", messages=100_000, big_mib=10, consume_bps=40e6)
    assert r["tunnel_messages"] == 100_000 and r["tunnel_in_order"]
    assert r["tunnel_big_intact"]
    assert 0 < r["tunnel_max_buffered"] <= r["tunnel_window"]
    # the reader was slow: the sender really had to wait for credit
    assert r["tunnel_max_buffered"] > r["tunnel_window"] // 2


def test_tunnel_peer_crash_is_reported_at_the_survivor():
    sim, work = small_world(nodes=60, seed=6)
    r = run_tunnel(sim, work, "c9", messages=100, big_mib=0)
    key = r["tunnel_key"]
    member = next(me for me, e in work.tunnel_events
                  if isinstance(e, ev.TunnelIncoming) and tunnel_of(e.key) == key)
    opener = key[0]
    sim.crash(member)
    crashed_at = sim.now

    def closes():
        return [e for me, e in work.tunnel_events
                if me == opener and isinstance(e, ev.TunnelClosed) and e.key == key]

    closed = sim.run_until(closes, timeout=30.0, check_every=0.1)
    assert closed is not None and closed <= 15.0, f"closed after {closed} s"
    assert sim.now - crashed_at <= 15.0
    assert [e.code for e in closes()] == [LOST]


def test_partition_trees_merge_after_heal():
    opts = MessagingOptions(nodes=300, seed=4, requests=4000)
    r = scenario_messaging_partition(opts)
    assert r["split_reachable_success_ratio"] >= 0.99
    assert r["split_unreachable_failed"] == r["split_unreachable"]
    assert r["recovery_s"] is not None and r["recovery_s"] <= 10.0
    assert r["floods_late"] == 0 and r["publish_order_violations"] == 0
    assert r["verify_request_success_ratio"] == 1.0
    assert r["verify_broadcast_delivery_ratio"] == 1.0
    assert r["verify_publish_delivery_ratio"] == 1.0
    assert r["request_duplicates"] == 0 and r["request_misdelivered"] == 0


@pytest.mark.parametrize("seed", [1, 9])
def test_a_small_ring_cut_for_12_s_has_whole_trees_soon_after_the_heal(seed):
    """What `iris chaos --fault partition` runs on real processes, where every event published
    5 s after the heal must arrive. A node that took over a root while the real root was
    suspected grafts back as soon as the suspect answers (it waited for the next tree beat:
    4 and 7 s on these seeds)."""
    r = scenario_messaging_partition(MessagingOptions(nodes=4, seed=seed, partition_s=12))
    assert r["checks_passed"], r["failed_checks"]
    assert r["recovery_s"] is not None and r["recovery_s"] <= 2.0


@pytest.mark.slow
def test_churn_keeps_requests_answered_and_nothing_duplicated():
    opts = MessagingOptions(nodes=300, seed=8, requests=6000, churn_s=60.0, publishes=400)
    r = scenario_messaging_churn(opts)
    assert r["replaced"] == 30
    assert r["request_success_ratio"] >= 0.99
    assert r["request_duplicates"] == 0 and r["request_misdelivered"] == 0
    assert r["broadcast_duplicates"] == 0 and r["publish_duplicates"] == 0
    assert r["broadcast_delivery_ratio"] > 0.9 and r["publish_delivery_ratio"] > 0.9


def test_a_tunnel_closed_under_loss_is_reported_not_written_to():
    """On a lossy network the scenario's tunnel can close before its last message (a
    keep-alive left unacknowledged): the report says so instead of the run failing with
    TunnelError on the closed tunnel. (Messaging under loss falls short of its checks today:
    docs/BENCHMARKS.md, "Real processes under packet loss".)"""
    r = scenario_messaging(MessagingOptions(nodes=8, seed=1, loss=0.05, links="datagrams"))
    assert r["tunnel_closed_early"] and not r["tunnel_big_intact"]
    assert r["tunnel_messages"] < MessagingOptions().tunnel_messages


def test_messaging_runs_through_the_wire_codec():
    opts = MessagingOptions(nodes=60, seed=9, requests=500, broadcasts=20, publishes=60,
                            tunnel_messages=200, tunnel_big_mib=1, wire=True)
    r = scenario_messaging(opts)
    assert r["request_success_ratio"] == 1.0
    assert r["broadcast_delivery_ratio"] == 1.0 and r["publish_delivery_ratio"] == 1.0
    assert r["tunnel_in_order"] and r["tunnel_big_intact"]


def test_service_limits_refuse_and_remote_errors_carry_their_text():
    from iris.core import REFUSED, REMOTE_ERROR
    from iris.core.limits import ServiceLimits

    sim, work = small_world(nodes=60, seed=11)
    member = sim.random_active()
    work.members["slow"] = {member}
    work.held["slow"] = []
    limits = ServiceLimits(max_concurrency=1, max_queued_bytes=0)
    work.act(member, lambda c: c.register("slow", limits))
    sim.run_until(lambda: work.grafted(member, "slow", False), timeout=10, check_every=0.1)
    requester = sim.random_active()
    for _ in range(3):
        work.request(requester, "slow", timeout=10.0)
    sim.run_for(2.0)
    slow = [r for r in work.requests.values() if r.cluster == "slow"]
    assert [r.status for r in slow].count(REFUSED) == 2
    assert len(work.held["slow"]) == 1
    (holder, token), = work.held["slow"]
    work.act(holder, lambda c: c.reply(token, error="boom"))
    sim.run_for(2.0)
    statuses = sorted(r.status for r in slow)
    assert statuses == sorted([REFUSED, REFUSED, REMOTE_ERROR])
    assert work.core(member).counters["requests_refused"] == 2


def test_leaving_members_prune_the_tree():
    sim, work = small_world(nodes=80, seed=12)
    cluster = "c3"  # five members
    members = sorted(work.members[cluster])
    for m in members:
        work.act(m, lambda c: c.unregister(cluster))
    work.members[cluster] = set()
    sim.run_for(30.0)
    from iris.core import cluster_group

    group = cluster_group(cluster)
    assert not any(group in n.app.trees for n in sim.nodes.values())
    work.request(sim.random_active(), cluster, timeout=20.0)
    sim.run_for(3.0)
    assert list(work.requests.values())[-1].status == NO_MEMBERS


REQUEST_KEYS = {
    "scenario", "nodes", "seed", "requests", "request_success_ratio", "request_duplicates",
    "request_misdelivered", "balance_max_over_mean", "checks_passed", "wall_s", "links",
}
REQUIRED_KEYS = {
    "messaging-pause": REQUEST_KEYS | {"request_late_executions", "paused", "pause_s"},
    "messaging": REQUEST_KEYS | {
        "broadcasts", "broadcast_delivery_ratio", "broadcast_duplicates", "publishes",
        "publish_delivery_ratio", "publish_duplicates", "publish_order_violations",
        "floods_late", "floods_dropped_out_of_order", "tunnel_messages", "tunnel_in_order"},
}


@pytest.mark.parametrize("scenario", ["messaging", "messaging-churn", "messaging-partition",
                                      "messaging-pause"])
def test_messaging_scenarios_report_every_figure(scenario, capsys):
    import json

    from simulations.cli import main

    main([scenario, "--nodes", "60", "--requests", "600", "--broadcasts", "10", "--publishes",
          "40", "--tunnel-messages", "100", "--tunnel-big-mib", "0", "--churn-s", "30",
          "--partition-s", "40", "--pause-s", "5", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result.keys() >= REQUIRED_KEYS.get(scenario, REQUIRED_KEYS["messaging"])
    if scenario == "messaging-partition":
        assert result["recovery_s"] is not None


def test_either_side_closes_a_tunnel_after_its_data():
    sim, work = small_world(nodes=60, seed=13)
    from simulations.messaging import TunnelRun

    run = TunnelRun(sim, work, "c9", 50, 0)
    result = run.finish()
    key, member = result["tunnel_key"], run.member
    member_end = (key[0], other_end(key[1]))
    work.act(member, lambda c: c.tunnel_send(member_end, b"last words"))
    work.act(member, lambda c: c.tunnel_close(member_end, "done"))
    sim.run_for(2.0)
    assert work.tunnel_log[key][-1] == b"last words"
    closed = [(me, e.code, e.reason) for me, e in work.tunnel_events
              if isinstance(e, ev.TunnelClosed)]
    assert (run.opener, OK, "done") in closed and (member, OK, "done") in closed
    with pytest.raises(Exception, match="closed"):
        work.act(run.opener, lambda c: c.tunnel_send(key, b"too late"))


def test_topic_limits_drop_events_nobody_consumes():
    from iris.core.limits import TopicLimits

    sim, work = small_world(nodes=40, seed=14)
    node = sim.random_active()
    work.held["firehose"] = []
    work.act(node, lambda c: c.subscribe("firehose", TopicLimits(max_queued_bytes=1000)))
    sim.run_for(3.0)
    publisher = sim.random_active()
    for _ in range(30):
        work.act(publisher, lambda c: c.publish("firehose", b"e" * 100))
    sim.run_for(2.0)
    assert len(work.held["firehose"]) == 6  # 1000 bytes of 100-byte events (+ ENTRY_COST each)
    assert work.core(node).counters["events_dropped"] == 24
