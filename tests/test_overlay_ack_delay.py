"""The acknowledgement-delay estimator: mean plus four deviations, capped."""

from overlay.ack_delay import MAX_ADAPTED_TIMEOUT_S, AckDelay


def test_first_sample_sets_mean_and_half_deviation():
    est = AckDelay()
    assert est.sample(0.1) == 0.1 + 4 * 0.05


def test_steady_delays_converge_on_the_delay():
    est = AckDelay()
    for _ in range(200):
        patience = est.sample(0.2)
    assert abs(patience - 0.2) < 1e-6


def test_patience_is_capped():
    est = AckDelay()
    assert est.sample(60.0) == MAX_ADAPTED_TIMEOUT_S
