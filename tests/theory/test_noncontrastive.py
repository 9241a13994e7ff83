"""Setting §12 (theory/noncontrastive.py): the flows against autograd and the paper's reduced
equations, the fixed points, and the claim's negative cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import theory.claims.noncontrastive as nc
from theory.noncontrastive import (
    ByolFlow,
    alignment_k,
    decoupled_rhs,
    fixed_points,
    population_loss,
)


def _spd(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return scale * a @ a.T / n


def _state(rng: np.random.Generator, n2: int = 3, n1: int = 5):
    w = rng.standard_normal((n2, n1))
    a = rng.standard_normal((n2, n2))
    return w, (a + a.T) / 2, rng.standard_normal((n2, n1))


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_flow_is_minus_the_gradient_of_j_plus_weight_decay(stop_gradient):
    """Lemma 1 (stop-gradient, EMA target) and Theorem 2 (no stop-gradient, W_a = W) with
    weight decay: the flow is −∂/∂(W, W_p) of J + (η/2)(‖W‖² + ‖W_p‖²/α_p) (W_p's rate α_p)."""
    rng = np.random.default_rng(0)
    x, xp = _spd(rng, 5), _spd(rng, 5, 0.4)
    w, wp, wa = _state(rng)
    wp = wp + 0.3 * rng.standard_normal(wp.shape)  # a general (non-symmetric) predictor
    eta, alpha_p = 0.07, 1.7
    tw, twp = torch.tensor(w, requires_grad=True), torch.tensor(wp, requires_grad=True)
    twa = torch.tensor(wa) if stop_gradient else tw
    tx, txp = torch.tensor(x), torch.tensor(xp)
    loss = population_loss(tw, twp, twa, tx, txp) + eta / 2 * (tw**2).sum()
    gw, gwp = torch.autograd.grad(loss, (tw, twp))
    flow = ByolFlow(x, xp, alpha_p, eta, 0.0, stop_gradient, symmetric=False, ema=stop_gradient)
    dw, dwp, _ = flow.rhs(w, wp, wa)
    assert np.allclose(dw, -gw.numpy(), atol=1e-12)
    assert np.allclose(dwp, -alpha_p * gwp.numpy() - eta * wp, atol=1e-12)


def test_population_loss_matches_monte_carlo():
    rng = np.random.default_rng(1)
    x, xp = _spd(rng, 3), _spd(rng, 3, 0.5)
    w, wp, wa = (
        rng.standard_normal((2, 3)),
        rng.standard_normal((2, 2)),
        rng.standard_normal((2, 3)),
    )
    n = 400_000
    mean = rng.standard_normal((n, 3)) @ np.linalg.cholesky(x).T
    lx = np.linalg.cholesky(xp)
    x1 = mean + rng.standard_normal((n, 3)) @ lx.T
    x2 = mean + rng.standard_normal((n, 3)) @ lx.T
    vals = 0.5 * ((x1 @ w.T @ wp.T - x2 @ wa.T) ** 2).sum(axis=1)
    exact = float(population_loss(*(torch.tensor(m) for m in (w, wp, wa, x, xp))))
    assert abs(vals.mean() - exact) <= 4 * vals.std() / np.sqrt(n)


def test_theorem2_kronecker_form():
    """vec Ẇ = −H vec W with H = X'⊗(W_pᵀW_p + I) + X⊗W̃_pᵀW̃_p + ηI ⪰ 0 (column-major vec)."""
    rng = np.random.default_rng(2)
    x, xp = _spd(rng, 4), _spd(rng, 4, 0.3)
    w, wp, _ = _state(rng, 3, 4)
    eta = 0.05
    dw, _, _ = ByolFlow(x, xp, eta=eta, stop_gradient=False).rhs(w, wp, w)
    eye = np.eye(3)
    h = np.kron(xp, wp.T @ wp + eye) + np.kron(x, (wp - eye).T @ (wp - eye)) + eta * np.eye(12)
    assert np.allclose(dw.flatten(order="F"), -h @ w.flatten(order="F"), atol=1e-12)
    assert np.linalg.eigvalsh(h).min() >= eta - 1e-12


def test_no_predictor_is_linear_decay():
    """W_p = I, W_a = W (appendix A, remark): Ẇ = −W(X' + ηI) with the stop-gradient and
    −W(2X' + ηI) without, whatever the stored W_p: both collapse."""
    rng = np.random.default_rng(3)
    x, xp = _spd(rng, 4), _spd(rng, 4, 0.3)
    w, wp, wa = _state(rng, 3, 4)
    eta = 0.1
    for stop, factor in ((True, 1.0), (False, 2.0)):  # without stop-gradient: −W(2X' + ηI)
        dw, dwp, dwa = ByolFlow(x, xp, eta=eta, stop_gradient=stop, predictor=False).rhs(w, wp, wa)
        assert np.allclose(dw, -w @ (factor * xp + eta * np.eye(4)), atol=1e-12)
        assert dwp is None and dwa is None


def test_isotropic_reduction_eq7_and_theorem3():
    """X = I, X' = σ²I, W_a = τW (here τ = 1), symmetric flow: Ḟ and Ẇ_p are eq. 7 and the
    commutator obeys L̇ = −(KL + LK) exactly."""
    rng = np.random.default_rng(4)
    n, s2, eta, ap = 4, 0.3, 0.05, 1.5
    w, wp, _ = _state(rng, n, n)
    dw, dwp, _ = ByolFlow(np.eye(n), s2 * np.eye(n), ap, eta).rhs(w, wp, w)
    f = w @ w.T
    df = dw @ w.T + w @ dw.T
    c = 1 + s2
    assert np.allclose(dwp, -ap / 2 * c * (wp @ f + f @ wp) + ap * f - eta * wp, atol=1e-12)
    assert np.allclose(df, -c * (wp @ wp @ f + f @ wp @ wp) + (wp @ f + f @ wp) - 2 * eta * f)
    dl = df @ wp + f @ dwp - dwp @ f - wp @ df
    lc, k = f @ wp - wp @ f, alignment_k(f, wp, s2, ap, eta)
    assert np.allclose(dl, -(k @ lc + lc @ k), atol=1e-12)


def test_fixed_points_and_parabola():
    s2, eta, ap = 0.5, 0.1, 2.0
    pm, pp = fixed_points(s2, eta)
    for p in (pm, pp):
        assert (1 + s2) * p**2 - p + eta == pytest.approx(0.0, abs=1e-14)
        dp, ds = decoupled_rhs(np.array(p), np.array(p**2 / ap), s2, ap, eta)
        assert abs(dp) < 1e-14 and abs(ds) < 1e-14
    assert pp == pytest.approx(0.5441518440112253)
    assert fixed_points(s2, 1 / (4 * (1 + s2)) + 1e-9) is None
    assert fixed_points(s2, 0.0) == pytest.approx((0.0, 1 / (1 + s2)))
    # eq. 14: d/dt (s − p²/α_p) = −2η(s − p²/α_p)
    rng = np.random.default_rng(5)
    p, s = rng.uniform(0, 1, 10), rng.uniform(0, 1, 10)
    dp, ds = decoupled_rhs(p, s, s2, ap, eta)
    assert np.allclose(ds - 2 * p * dp / ap, -2 * eta * (s - p**2 / ap))


def test_byol_without_predictor_with_ema_collapses():
    """Derived here [R]: with an EMA target and W_p = I, (W, W_a) is linear with
    per-mode matrix [[−(1 + σ² + η), 1], [β, −β]] (det β(σ² + η) > 0): it collapses too."""
    n, s2, eta, beta = 4, 0.5, 0.0, 0.5
    flow = ByolFlow(np.eye(n), s2 * np.eye(n), eta=eta, beta=beta, predictor=False, ema=True)
    w0 = np.random.default_rng(6).standard_normal((n, n))
    w = flow.euler(w0, np.eye(n), np.zeros((n, n)), 0.05, 2000)[0]
    rate = max(np.linalg.eigvals(np.array([[-(1 + s2 + eta), 1.0], [beta, -beta]])).real)
    assert rate < 0
    assert np.linalg.norm(w[-1]) < 1e-6 * np.linalg.norm(w0)


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        ByolFlow(np.eye(3), np.eye(2))
    with pytest.raises(ValueError, match="eta"):
        ByolFlow(np.eye(2), np.eye(2), eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        ByolFlow(np.eye(2), np.eye(2), alpha_p=0.0)
    with pytest.raises(ValueError, match="W_a = W"):
        ByolFlow(np.eye(2), np.eye(2), stop_gradient=False, ema=True)


# ---------------------------------------------------------------- the claim, negative cases
@pytest.mark.parametrize(
    "broken",
    [
        {"collapses": {"no predictor": False}},  # "without predictor it does not collapse"
        {"collapses": {"no stop-gradient": False}},
        {"collapses": {"both": True}},
        {"p_star": 1 / (1 + nc.SIGMA2)},  # the η = 0 fixed point τ/(1 + σ²)
        {"p_star": fixed_points(nc.SIGMA2, nc.ETA)[0]},  # the unstable p₋
    ],
)
def test_a_broken_statement_is_violated(broken):
    r = nc.check_noncontrastive("tiny", 0, **broken)
    assert r.verdict == "violated", r.reason


def test_a_wrong_alignment_matrix_is_violated(monkeypatch):
    """Theorem 3 with (3/2)η replaced by 3η in K: the ODE residual no longer vanishes with dt."""

    def wrong_k(f, wp, sigma2, alpha_p, eta, tau=1.0):
        return alignment_k(f, wp, sigma2, alpha_p, eta, tau) + 1.5 * eta * np.eye(f.shape[-1])

    monkeypatch.setattr(nc, "alignment_k", wrong_k)
    r = nc.check_noncontrastive("tiny", 0)
    assert r.verdict == "violated", r.reason
    assert "Theorem 3 ODE residual" in r.reason


def test_the_claim_holds_and_is_deterministic():
    a, b = nc.check_noncontrastive("tiny", 2), nc.check_noncontrastive("tiny", 2)
    assert a.verdict == "holds", a.reason
    assert a.summary == b.summary
