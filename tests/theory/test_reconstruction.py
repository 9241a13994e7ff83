"""Setting §15 (theory/reconstruction.py) against Monte Carlo, and its claim's negative cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

import theory.claims.reconstruction as rc
from theory.claims.base import fit_slope, judge_close, judge_slope
from theory.reconstruction import (
    ReconstructionModel,
    nested_probe_excess,
    ols_expected_excess,
    random_instance,
)


@pytest.fixture(scope="module")
def model() -> ReconstructionModel:
    return random_instance(np.random.default_rng(0), k=3, d1=10, d2=5)


def test_ols_expected_excess_value_and_domain():
    assert ols_expected_excess(2.0, 3, 14) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="n > p \\+ 1"):
        ols_expected_excess(1.0, 3, 4)


def test_model_rejects_bad_shapes_and_noise():
    a, b, th = np.ones((6, 2)), np.ones((4, 2)), np.ones(2)
    with pytest.raises(ValueError, match="A is"):
        ReconstructionModel(a, np.ones((4, 3)), th)
    with pytest.raises(ValueError, match="A is"):
        ReconstructionModel(a, b, np.ones(3))
    with pytest.raises(ValueError, match="leak"):
        ReconstructionModel(a, b, th, leak=np.ones((6, 4)))
    with pytest.raises(ValueError, match="noise"):
        ReconstructionModel(a, b, th, noise1=0.0)


def test_psi_is_linear_in_the_posterior_mean_under_ci(model):
    k = model.posterior_gain()
    assert np.allclose(model.psi_matrix(), model.b @ k, atol=1e-13)  # Ψ = BK
    feats = model.psi_features()
    assert feats.shape == (model.k, model.d1)  # rank k
    _, risk = model.best_probe(feats)
    assert risk == pytest.approx(model.bayes_risk(), abs=1e-13)  # the probe on ψ reaches Bayes


def test_leak_breaks_the_representation():
    leaky = random_instance(np.random.default_rng(0), k=3, d1=10, d2=5, leak=1.0)
    feats = leaky.psi_features()
    assert feats.shape[0] == leaky.d2  # ψ no longer lies in a k-dim space
    assert leaky.best_probe(feats)[1] > leaky.bayes_risk() + 1e-3


def test_closed_forms_against_monte_carlo(model):
    n = 200_000
    x1, x2, t = model.sample(np.random.default_rng(1), n)
    emp = x1.T @ x1 / n
    se = np.sqrt(
        (np.diag(model.sigma11)[:, None] * np.diag(model.sigma11)[None] + model.sigma11**2) / n
    )
    assert np.all(np.abs(emp - model.sigma11) <= 5 * se)
    psi_hat = np.linalg.lstsq(x1, x2, rcond=None)[0].T
    assert np.max(np.abs(psi_hat - model.psi_matrix())) < 0.02
    resid = t - x1 @ np.linalg.lstsq(x1, t, rcond=None)[0]
    var = float(np.mean(resid**2))
    assert var == pytest.approx(model.bayes_risk(), abs=5 * var * math.sqrt(2 / n))
    w = np.random.default_rng(2).standard_normal(model.k)
    m = model.psi_features()
    loss = (t - x1 @ m.T @ w) ** 2
    assert abs(loss.mean() - model.risk(m, w)) <= 5 * loss.std() / math.sqrt(n)
    x1b, tb = model.sample_labelled(np.random.default_rng(3), n)
    assert np.mean(tb**2) == pytest.approx(model.var_t, rel=0.02)
    assert x1b.shape == (n, model.d1)


def test_nested_fits_equal_direct_least_squares(model):
    x1, t = model.sample_labelled(np.random.default_rng(4), 60)
    m = np.eye(model.d1)
    ns = [20, 35, 60]
    got = nested_probe_excess(model, m, x1, t, ns)
    for n, g in zip(ns, got):
        w = np.linalg.lstsq(x1[:n], t[:n], rcond=None)[0]
        assert g == pytest.approx(model.risk(m, w) - model.bayes_risk(), rel=1e-9)
    with pytest.raises(ValueError, match="increase"):
        nested_probe_excess(model, m, x1, t, [30, 20])


def test_ols_closed_form_against_monte_carlo(model):
    rng = np.random.default_rng(5)
    feats = model.psi_features()
    ns = [12, 24]
    vals = []
    for _ in range(4000):
        x1, t = model.sample_labelled(rng, 24)
        vals.append(nested_probe_excess(model, feats, x1, t, ns))
    vals = np.array(vals)
    for j, n in enumerate(ns):
        pred = ols_expected_excess(model.bayes_risk(), model.k, n)
        se = vals[:, j].std() / math.sqrt(len(vals))
        assert abs(vals[:, j].mean() - pred) <= 4 * se


def test_learned_psi_approximation_error_shrinks_with_m(model):
    rng = np.random.default_rng(6)
    bayes = model.bayes_risk()
    small = model.best_probe(model.learned_psi_features(rng, 40, model.k))[1] - bayes
    large = model.best_probe(model.learned_psi_features(rng, 40_000, model.k))[1] - bayes
    assert 0 <= large < small
    with pytest.raises(ValueError, match="unlabelled"):
        model.learned_psi_features(rng, model.d1, model.k)


def test_claim_is_violated_without_conditional_independence():
    r = rc.run_check("tiny", 0, leak=1.0)
    assert r.verdict == "violated"
    assert "probe on ψ reaches Bayes" in r.reason


def test_claim_detects_a_wrong_constant_and_a_plateau():
    s = rc.sweep("tiny", 0)
    # the excess of the probe on ψ does not scale with d₁: that constant is rejected
    v, e = rc.calibration(s["excess"]["psi"], s["ns"], 0.0, s["bayes"], rc.D1)
    assert judge_close("ψ against R*d₁/(n−d₁−1)", v, 1.0, se=e).verdict == "violated"
    # a ψ̂ learned from few unlabelled pairs plateaus at a_m: the raw slope is not −1
    few = rc.sweep("tiny", 0, unlabelled=40)
    slope, se = fit_slope(few["ns"], few["excess"]["learned"])
    assert judge_slope("learned total", slope, se, -1.0, rc.SLOPE_TOL).verdict == "violated"
    # while the accounting a_m + R_M k/(n−k−1) still holds
    assert rc.run_check("tiny", 0, unlabelled=40).verdict == "holds"
