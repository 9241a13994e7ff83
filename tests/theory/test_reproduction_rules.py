"""The verdict rules of reproduction claims, fed synthetic per-seed differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from theory.claims.reproduction import (
    PRIMARY_FAMILY,
    Judged,
    correct_across,
    family_missing,
    judge,
)
from theory.paired import correct, paired_test

KEYS = ["sigma_phi_calibrated", "sigma_adapted_tuned", "excess_phi_calibrated"]
PRIMARY = [True, True, False]
REVERSE = {"sigma_phi_calibrated": "excess_phi_calibrated"}


def _diffs(mean: float, n: int = 10, spread: float = 0.01, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=n)
    d = (d - d.mean()) / d.std(ddof=1)  # exactly mean 0, sd 1
    return (mean + spread * d).tolist()


def _judge(primary_means, reverse_mean=0.0, diverged=None, min_effect=0.01, dead=()):
    tests = []
    for key, m in zip(KEYS[:2], primary_means):
        d = _diffs(m)
        for i in dead:
            d[i] = math.nan
        tests.append(paired_test(key, d))
    tests.append(paired_test(KEYS[2], _diffs(reverse_mean, seed=1)))
    correct(tests[:2])
    correct(tests[2:])
    rules = Judged({k: min_effect for k in KEYS[:2]}, REVERSE, diverged or {}, 10)
    return judge(tests, PRIMARY, KEYS, rules)


def test_both_primary_lower_beyond_the_minimum_effect_is_reproduced():
    c = _judge([-0.05, -0.04])
    assert c.verdict == "reproduced"
    assert "[primary] sigma_phi_calibrated: -0.0500" in c.reason


def test_a_primary_test_higher_is_not_reproduced():
    assert _judge([-0.05, +0.04]).verdict == "not reproduced"


def test_an_undecided_primary_test_is_inconclusive():
    assert _judge([-0.05, 0.0]).verdict == "inconclusive"


def test_a_significant_difference_below_the_minimum_effect_is_no_practical_difference():
    """Δ = −0.001 with a spread of 0.0001: significant (p ≈ 1e-10), but a tenth of the stated
    minimum effect."""
    tests = [paired_test(k, _diffs(-0.001, spread=0.0001)) for k in KEYS[:2]]
    tests.append(paired_test(KEYS[2], _diffs(0.0, seed=1)))
    correct(tests[:2])
    assert all(t.direction == "lower" for t in tests[:2])
    c = judge(tests, PRIMARY, KEYS, Judged({k: 0.01 for k in KEYS[:2]}, REVERSE, {}, 10))
    assert c.verdict == "no practical difference"
    assert "below the minimum effect: sigma_phi_calibrated (|Δ| < 0.01)" in c.reason


def test_an_adverse_reverse_direction_makes_the_verdict_mixed():
    c = _judge([-0.05, -0.04], reverse_mean=+0.03)
    assert c.verdict == "mixed"
    assert "the reverse KL direction is significantly adverse: excess_phi_calibrated" in c.reason
    # the same reverse difference without significance: reproduced
    assert _judge([-0.05, -0.04], reverse_mean=+0.003).verdict == "reproduced"


def test_four_of_ten_gessl_seeds_diverged_cannot_be_reproduced():
    """The six finished seeds say 'lower', but the four diverged ones count against GeSSL."""
    c = _judge([-0.05, -0.04], diverged={"gessl": 4}, dead=(0, 1, 2, 3))
    assert c.verdict == "inconclusive"
    assert "GeSSL diverged on 4 of 10 seeds" in c.reason
    assert _judge([-0.05, -0.04], diverged={"gessl": 5}, dead=range(5)).verdict == (
        "not reproduced"
    )


def test_plain_diverging_makes_an_adverse_verdict_inconclusive():
    c = _judge([+0.05, +0.04], diverged={"plain": 2}, dead=(0, 1))
    assert c.verdict == "inconclusive" and "plain diverged on 2 of 10 seeds" in c.reason
    assert _judge([+0.05, +0.04]).verdict == "not reproduced"


def test_a_primary_test_without_a_finished_seed_is_inconclusive():
    c = _judge([-0.05, -0.04], dead=range(10))
    assert c.verdict == "inconclusive" and "no finished seed" in c.reason


def _record(claim_id: str, means: list[float], seed: int) -> dict:
    tests = [paired_test(k, _diffs(m, seed=seed, spread=0.03)) for k, m in zip(KEYS, [*means, 0.0])]
    return {
        "claim_id": claim_id,
        "kind": "reproduction",
        "verdict": "inconclusive",
        "reason": "",
        "details": {
            "tests": [
                t.to_dict() | {"primary": p, "key": k} for t, p, k in zip(tests, PRIMARY, KEYS)
            ],
            "rules": {"min_effect": {}, "reverse": REVERSE, "diverged": {}, "seeds": 10},
        },
    }


def test_holm_runs_over_the_fixed_family_of_primary_tests():
    """Six primary tests (two per family member) share one Holm correction; the secondary
    tests are corrected within their claim; a claim's verdict uses the family's adjusted p."""
    records = [_record(c, [-0.03, -0.02 * (i + 1)], seed=i) for i, c in enumerate(PRIMARY_FAMILY)]
    assert correct_across(records) == 6
    primary_p = [
        (d["p"], d["p_holm"]) for r in records for d in r["details"]["tests"] if d["primary"]
    ]
    ps = sorted(p for p, _ in primary_p)
    smallest = min(primary_p)
    assert smallest[1] == pytest.approx(min(1.0, 6 * ps[0]))  # Holm's first step over six
    for r in records:
        sec = [d for d in r["details"]["tests"] if not d["primary"]]
        assert sec[0]["p_holm"] == pytest.approx(sec[0]["p"])  # one secondary test: itself
        assert r["details"]["holm"]["primary_tests"] == 6
        assert r["verdict"] in ("reproduced", "inconclusive")


def test_a_selection_with_one_family_member_needs_the_others():
    assert family_missing(["gessl_sigma_subspace", "collapse_values"]) == [
        "gessl_sigma_homogeneous",
        "gessl_sigma_noise_level",
    ]
    assert family_missing(["collapse_values"]) == []
    assert family_missing(list(PRIMARY_FAMILY)) == []
