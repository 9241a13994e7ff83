"""Power of dimensional_collapse, contrastive_identifiability, barlow_stepwise and
noncontrastive_dynamics beyond the generic tiny run of every fast alternative
(tests/theory/test_power.py): the judgements the reviewer found weak, and the alternatives that
only the default profile rejects."""

from __future__ import annotations

import numpy as np
import pytest

import theory.claims.collapse as cc
import theory.claims.dynamics as cd
import theory.claims.identifiability as ci
from theory.claims import get_claim
from theory.claims.base import N_SE, Alternative


# ---------------------------------------------------------------- dimensional_collapse
def test_collapse_ratios_straddle_the_threshold():
    """The factor 2 is exercised: ratios on both sides of it, a moved threshold changes the
    predicted set, and the resolution is the gap to the nearest tested ratio."""
    ratios = cc.AUG_VAR / cc.DATA_VAR
    assert np.any((ratios > 1.2) & (ratios < 2)) and np.any((ratios > 2) & (ratios < 3))
    assert cc.predicted_collapsed(cc.DATA_VAR, cc.AUG_VAR, "same").tolist() == [4, 5]
    assert cc._threshold_low(cc.DATA_VAR, cc.AUG_VAR, "same").tolist() == [2, 3, 4, 5]
    assert cc._threshold_high(cc.DATA_VAR, cc.AUG_VAR, "same").size == 0
    assert cc._threshold_resolution(cc.DATA_VAR, cc.AUG_VAR) == pytest.approx(0.075)


def test_undecided_eigenvalues_are_inconclusive_not_violated():
    """An eigenvalue between COLLAPSED and RETAINED could still end either way: inconclusive,
    unless no outcome of the undecided ones gives the predicted count."""
    decided = np.array([[1.0, 0.3, 0.1, 0.05, 1e-14, 1e-15]])
    undecided = np.array([[1.0, 0.3, 0.1, 0.05, 1e-6, 1e-15]])
    assert cc._count_check("x", decided, 2)[0].verdict == "holds"
    assert cc._count_check("x", undecided, 2)[0].verdict == "inconclusive"
    assert cc._count_check("x", undecided, 1)[0].verdict == "inconclusive"
    assert cc._count_check("x", undecided, 3)[0].verdict == "violated"  # at most 2 can collapse
    assert cc._count_check("x", decided, 1)[0].verdict == "violated"  # 2 already collapsed


def test_collapse_trained_too_briefly_is_inconclusive(monkeypatch):
    """The reviewer's false alarm: ratios near 2 trained too briefly leave the ratio-2.15
    direction undecided — inconclusive, never violated."""
    monkeypatch.setitem(cc.BUDGETS, "tiny", (128, 40, 3))
    r = cc.check_collapse("tiny", 0)
    assert r.verdict == "inconclusive", r.reason
    assert "undecided" in r.reason


def test_direction_tolerance_is_in_standard_errors_on_quick():
    """On the default profile the angle tolerance is N_SE standard errors of one replicate's
    angle (well below the 0.6 rad of the rotated alternative), and the true directions are
    inside it while the rotated ones are not."""
    c = get_claim("dimensional_collapse")
    r = c.check("quick", 0)
    assert r.verdict == "holds", r.reason
    tol = r.details["direction_resolution_rad"]
    assert tol == pytest.approx(N_SE * r.details["angle_se_same"])
    assert r.details["angle_same"] <= tol < cc.WRONG_ROTATION
    wrong = c.check("quick", 0, alternative="rotated_directions")
    assert wrong.verdict == "violated", wrong.reason
    assert wrong.details["angle_same"] > cc.WRONG_ROTATION - tol


def test_rotated_directions_are_a_rotation_by_the_stated_angle():
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))[0]
    idx = np.array([4, 5])
    rot = cc._rotated_directions(basis, idx)
    assert np.allclose(rot.T @ rot, np.eye(2), atol=1e-12)
    angle = cc.max_principal_angle(rot, cc.predicted_directions(basis, idx))
    assert angle == pytest.approx(cc.WRONG_ROTATION, abs=1e-9)


# ---------------------------------------------------------------- contrastive_identifiability
def test_identifiability_thresholds_are_one_sided():
    """mean − 2 SE ≥ bar holds; mean + 2 SE < bar is violated (an R² of 0.85 fails a 0.95 bar
    whatever the training loss); a straddling interval is inconclusive."""
    assert ci._threshold("R²", [0.97, 0.98, 0.99], 0.95).verdict == "holds"
    assert ci._threshold("R²", [0.84, 0.85, 0.86], 0.95).verdict == "violated"
    assert ci._threshold("R²", [0.7, 0.71, 0.69], 0.95).verdict == "violated"
    assert ci._threshold("R²", [0.85, 0.9, 1.0], 0.95).verdict == "inconclusive"
    # the old rule ("within 4 SE") accepted this; mean − 2 SE = 0.927 < 0.95
    assert ci._threshold("R²", [0.93, 0.95, 0.94, 0.96, 0.92], 0.95).verdict != "holds"


def test_identifiability_training_quality_is_judged():
    assert ci._trained([0.03, 0.04, 0.035]).verdict == "holds"
    assert ci._trained([0.6, 0.7, 0.65]).verdict == "violated"
    assert ci._trained([0.05, 0.15, 0.1]).verdict == "inconclusive"


def test_identifiability_ten_steps_is_violated_on_quick():
    """The close alternative the default profile is built to reject (R² already ≈ 0.95 after
    ten steps; the InfoNCE still ≈ 0.15 nats above the optimum and the fitted map's σ ratio
    ≈ 0.85); the claim holds there."""
    c = get_claim("contrastive_identifiability")
    assert "tiny" not in c.alternative("ten_steps").rejects_on
    r = c.check("quick", 0)
    assert r.verdict == "holds", r.reason
    assert r.details["resolution"]["relative"] < 0.01
    wrong = c.check("quick", 0, alternative="ten_steps")
    assert wrong.verdict == "violated", wrong.reason


def test_identifiability_one_step_fails_the_training_check_at_every_budget():
    """The reviewer's case: trained one step, the result is violated (not inconclusive) and the
    training check says why."""
    c = get_claim("contrastive_identifiability")
    for budget in ("tiny", "quick"):
        r = c.check(budget, 0, alternative="one_step")
        assert r.verdict == "violated", r.reason
        assert "not trained to the optimum" in r.reason


# ---------------------------------------------------------------- barlow_stepwise
@pytest.mark.parametrize("factor", [0.98, 1.02])
def test_barlow_rate_off_by_two_percent_is_violated(factor):
    """The trajectory comparison resolves the rate 8γ_j to about 1.5%: 2% off is violated."""

    def wrong(t, gamma, c0):
        e = np.exp(8 * factor * gamma * t)
        return c0 * e / (1 - c0 + c0 * e)

    alt = Alternative(
        "rate", "rate off by 2%", {"theory.claims.dynamics.logistic_trajectory": wrong}
    )
    with alt.applied():
        r = cd.barlow_stepwise("tiny", 0)
    assert r.verdict == "violated", r.reason
    truth = get_claim("barlow_stepwise").check("tiny", 0)
    assert truth.verdict == "holds"
    assert truth.details["resolution"]["relative"] < 0.02
