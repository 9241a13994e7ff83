"""Power of the generalisation and task-family claims (theory/claims/generalization.py and
families.py): the alternatives that only the default profile rejects are run on ``quick``
against the true claim on the same profile; the ones rejected on ``tiny`` are run by
tests/theory/test_power.py. Here also: the resolution each check now reports."""

from __future__ import annotations

import pytest

from theory.claims import get_claim


@pytest.mark.parametrize("alternative", [None, "slow_rate", "undertrained"])
def test_task_generalization_rate_rejects_the_slow_rate_and_an_undertrained_critic(alternative):
    """The fitted critic's excess decays like 1/n, not n^{-1/2}; stopped after 5 L-BFGS steps it
    does not (its optimisation error sets a slower decay)."""
    r = get_claim("task_generalization_rate").check("quick", 0, alternative=alternative)
    assert r.verdict == ("holds" if alternative is None else "violated"), r.reason
    if alternative is None:
        # an exponent within tolerance (0.25) + 2 SE of the slope cannot be told apart
        assert 0.25 < r.details["resolution"]["relative"] < 0.5


@pytest.mark.parametrize("alternative", [None, "slow_rate", "early_regime"])
def test_multitask_fast_rate_rejects_the_slow_rate_and_an_early_threshold_on_quick(alternative):
    r = get_claim("multitask_fast_rate").check("quick", 0, alternative=alternative)
    assert r.verdict == ("holds" if alternative is None else "violated"), r.reason


def test_rademacher_complexity_step_is_nearly_tight():
    """The power of task_rademacher_bound comes from its complexity step: the Monte-Carlo left
    side sits within a few percent of its bound, while the gap sits far below the final bound."""
    r = get_claim("task_rademacher_bound").check("tiny", 0)
    assert r.verdict == "holds", r.reason
    d = r.details
    assert 0.95 < d["complexity_ratio"] <= 1.0 + 4 * d["complexity_ratio_se"]
    # a bound 0.84 times too small (the noise counted in one dimension) is beyond resolution
    assert d["resolution"]["relative"] < 0.1
    assert d["bound_over_gap_at_max_n"] > 100


def test_arora_check_resolves_tiny_inflations_of_the_bound():
    r = get_claim("arora_class_collision").check("tiny", 0)
    assert r.verdict == "holds", r.reason
    assert 0.0 <= r.details["resolution"]["relative"] < 1e-3


@pytest.mark.parametrize(
    "claim_id", ["family_bayes_homogeneous", "family_bayes_subspace", "family_bayes_noise_level"]
)
def test_family_claims_resolve_the_identity_to_a_fraction_of_the_kl(claim_id):
    r = get_claim(claim_id).check("tiny", 0)
    assert r.verdict == "holds", r.reason
    assert 0.0 < r.details["resolution"]["relative"] < 0.2
    assert len(get_claim(claim_id).alternatives) >= 3
