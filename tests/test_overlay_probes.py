"""Probe bookkeeping: one probe per peer, answers matched by sequence number and sender."""

from overlay.probes import FATAL, P_CANDIDATE, P_CONFIRM, P_HEAL, RETRIED, Probe, Probes


def test_an_answer_counts_only_from_the_probed_peer():
    probes = Probes(limit=4)
    probes.add(Probe(1, peer=10, sent_at=0.0, purpose=P_CANDIDATE, attempt=1, want_leaf=False))
    assert probes.answer(1, src=11, carries_leaf=False) is None
    assert probes.answer(2, src=10, carries_leaf=False) is None
    probe = probes.answer(1, src=10, carries_leaf=False)
    assert probe is not None and probe.peer == 10
    assert not probes and 10 not in probes.by_peer


def test_a_probe_that_wants_the_leaf_set_waits_for_the_answer_carrying_it():
    probes = Probes(limit=4)
    probes.add(Probe(1, peer=10, sent_at=0.0, purpose=P_CONFIRM, attempt=1, want_leaf=True))
    assert probes.confirming()
    assert probes.answer(1, src=10, carries_leaf=False) is None
    assert probes.answer(1, src=10, carries_leaf=True) is not None
    assert not probes.confirming()


def test_expiry_takes_the_probe_out_once_and_the_limit_holds():
    probes = Probes(limit=2)
    probes.add(Probe(1, 10, 0.0, P_HEAL, 1, False))
    probes.add(Probe(2, 11, 0.0, P_HEAL, 1, False))
    assert probes.full()
    assert probes.expire(1) is not None and probes.expire(1) is None
    assert not probes.full() and len(probes) == 1


def test_every_retried_purpose_is_fatal_in_the_end_but_a_joiners_confirmation():
    # A tentative leaf-set member that never answers is left out of the joiner's leaf set,
    # after as many probes as a live member would need (one lost probe must not cost it).
    assert RETRIED - {P_CONFIRM} <= FATAL and P_CONFIRM in RETRIED
    assert P_CANDIDATE not in FATAL and P_CONFIRM not in FATAL and P_HEAL not in FATAL
    assert P_CANDIDATE not in RETRIED and P_HEAL not in RETRIED
