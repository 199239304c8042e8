"""Stopping with evidence: flips between rounds, the exact McNemar test, patience."""

import pytest

from pwd_agent.nodes.decide import stop_reason
from pwd_agent.stats import compare, exact_mcnemar_p


def test_exact_mcnemar_matches_the_binomial_tail():
    assert exact_mcnemar_p(0, 0) == 1.0
    assert exact_mcnemar_p(5, 0) == pytest.approx(1 / 32)
    assert exact_mcnemar_p(6, 1) == pytest.approx(8 / 128)       # P(X>=6), X ~ Bin(7, 1/2)
    assert exact_mcnemar_p(1, 6) == pytest.approx(127 / 128)     # more broken than fixed: no evidence of a gain


def test_compare_counts_flips_over_shared_items():
    before = {1: False, 2: False, 3: True, 4: True, 5: False}
    after = {1: True, 2: False, 3: False, 4: True, 6: True}
    flips = compare(before, after)
    assert (flips.fixed, flips.broken, flips.still_failing) == (1, 1, 1)
    assert flips.p_value == pytest.approx(0.75)


def rounds(*devs, p=None):
    return [{"round": i, "dev": d, "holdout": 0.0, "gain_p": (p[i] if p else None)} for i, d in enumerate(devs)]


def test_goal_and_max_rounds_come_first():
    assert stop_reason(rounds(0.1, 0.9), 0.8, "dev", 3, 0.0) == "goal_met"
    assert stop_reason(rounds(0.1, 0.2), 0.8, "dev", 1, 0.0) == "max_rounds"
    assert stop_reason(rounds(0.1, 0.2), 0.8, "dev", 3, 0.0) is None  # round 1 (V1) never stops for no gain


def test_a_gain_counts_only_when_significant():
    significant = rounds(0.1, 0.2, 0.5, p=[None, 0.3, 0.01])
    noise = rounds(0.1, 0.2, 0.25, p=[None, 0.3, 0.4])
    worse = rounds(0.1, 0.3, 0.25, p=[None, 0.3, 0.01])  # significant vs round 1? it is below round 1
    assert stop_reason(significant, 0.8, "dev", 5, 0.0) is None
    assert stop_reason(noise, 0.8, "dev", 5, 0.0) == "no_gain"
    assert stop_reason(worse, 0.8, "dev", 5, 0.0) == "no_gain"


def test_patience_allows_that_many_flat_repair_rounds():
    flat = rounds(0.1, 0.2, 0.2, p=[None, 0.3, 1.0])
    assert stop_reason(flat, 0.8, "dev", 5, 0.0, patience=2) is None
    flat2 = rounds(0.1, 0.2, 0.2, 0.21, p=[None, 0.3, 1.0, 0.5])
    assert stop_reason(flat2, 0.8, "dev", 5, 0.0, patience=2) == "no_gain"
    recovered = rounds(0.1, 0.2, 0.2, 0.6, p=[None, 0.3, 1.0, 0.001])
    assert stop_reason(recovered, 0.8, "dev", 5, 0.0, patience=2) is None
