"""Setting §16 (theory/multiview.py) against Monte Carlo and scipy; the claim's negative cases."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import theory.claims.multiview as mv
from theory.multiview import MultiViewGaussian, gaussian_logpdf, inv_sqrt, random_instance


@pytest.fixture(scope="module")
def model() -> MultiViewGaussian:
    return random_instance(np.random.default_rng(0), 0.4)


def test_helpers_against_scipy():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((4, 4))
    cov = g @ g.T + np.eye(4)
    w = inv_sqrt(cov)
    assert np.allclose(w @ cov @ w, np.eye(4), atol=1e-12)
    x = rng.standard_normal((7, 4))
    assert np.allclose(gaussian_logpdf(x, cov), multivariate_normal(np.zeros(4), cov).logpdf(x))


def test_model_validation():
    with pytest.raises(ValueError, match="latent dimension"):
        MultiViewGaussian(np.ones((3, 4)), np.ones((3, 5)), np.ones(4))
    with pytest.raises(ValueError, match="latent dimension"):
        MultiViewGaussian(np.ones((3, 4)), np.ones((3, 4)), np.ones(3))
    with pytest.raises(ValueError, match="noise"):
        MultiViewGaussian(np.ones((3, 4)), np.ones((3, 4)), np.ones(4), noise_x=0.0)
    with pytest.raises(ValueError, match="block"):
        random_instance(np.random.default_rng(0), 0.1, shared=4, block=3)


def test_gamma_changes_only_the_target():
    a = random_instance(np.random.default_rng(3), 0.0)
    b = random_instance(np.random.default_rng(3), 0.7)
    assert np.array_equal(a.lx, b.lx) and np.array_equal(a.lz, b.lz)
    assert np.array_equal(a.w[:2], b.w[:2]) and np.all(a.w[2:] == 0) and np.all(b.w[2:] > 0)


def test_conditional_means_and_redundancy_against_monte_carlo(model):
    n = 300_000
    x, z, y = model.sample(np.random.default_rng(2), n)
    v = np.hstack([x, z])
    assert np.allclose(np.linalg.lstsq(x, y, rcond=None)[0], model.beta_x, atol=0.02)
    assert np.allclose(np.linalg.lstsq(v, y, rcond=None)[0], model.beta_xz, atol=0.02)
    resid = (y - v @ model.beta_xz) ** 2
    assert abs(resid.mean() - model.bayes_risk()) <= 4 * resid.std() / math.sqrt(n)
    eps_x, eps_z = model.redundancy()
    for val, mu in ((eps_x, x @ model.beta_x), (eps_z, z @ model.beta_z)):
        d = (mu - v @ model.beta_xz) ** 2
        assert abs(d.mean() - val) <= 4 * d.std() / math.sqrt(n)
    # f(x) = E[μ_Z(Z) | X = x]: the regression of μ_Z(Z) on X
    f = np.linalg.lstsq(x, z @ model.beta_z, rcond=None)[0]
    assert np.allclose(f, model.landmark_coef(), atol=0.02)


def test_canonical_structure(model):
    rho, mx, mz = model.canonical()
    assert np.sum(rho > 1e-10) == 2  # rank Σ_xz = dim of the shared latent
    u = mx @ model.sigma_xx @ mx.T
    assert np.allclose(u, np.eye(len(rho)), atol=1e-10)
    assert np.allclose(mx @ model.sigma_xz @ mz.T, np.diag(rho), atol=1e-10)
    rng = np.random.default_rng(4)
    x, z, _ = model.sample(rng, 50)
    assert np.allclose(model.log_density_ratio(x, z), model.log_density_ratio_canonical(x, z))
    # the landmark predictor lies in the span of the canonical variates φ
    phi = model.cca_features()
    beta_f = model.landmark_coef()
    coef = np.linalg.lstsq(phi.T, beta_f, rcond=None)[0]
    assert np.allclose(phi.T @ coef, beta_f, atol=1e-10)
    assert model.cca_features(1).shape == (1, model.dx)


def test_critic_embeddings_give_the_density_ratio_up_to_anchor_terms(model):
    x, z, _ = model.sample(np.random.default_rng(7), 6)
    ex, ez = model.critic_embeddings(x, z)
    assert np.allclose(ex[:, :-1], x @ model.cca_features().T)  # e_x = (φ(x), 1)
    dots = ex @ ez.T
    logr = model.log_density_ratio(np.repeat(x, 6, axis=0), np.tile(z, (6, 1))).reshape(6, 6)
    diff = dots - logr  # depends on the anchor x_i only
    assert np.allclose(diff, diff[:, :1], atol=1e-10)


def test_sandwich_and_ordering_on_many_instances():
    for inst in range(30):
        rows = [mv.closed_forms(random_instance(np.random.default_rng(inst), g)) for g in mv.GAMMAS]
        for f in rows:
            tol = 1e-9 * max(1.0, f["excess_f"])
            assert f["excess_f"] == pytest.approx(f["eps_x"] + f["f_minus_mu_x"], abs=tol)
            assert f["eps_x"] - tol <= f["excess_phi"] <= f["excess_f"] + tol
            assert f["excess_f"] <= f["eps_x"] + f["eps_z"] + tol
        assert all(b["eps"] > a["eps"] for a, b in pairwise(rows))
        assert all(b["excess_phi"] > a["excess_phi"] for a, b in pairwise(rows))


def test_landmark_predictor_from_the_density_ratio(model):
    rng = np.random.default_rng(5)
    x, _, _ = model.sample(rng, 2)
    zl = model.sample_z(rng, 100_000)
    for xi in x:
        terms = np.exp(model.log_density_ratio(np.repeat(xi[None], len(zl), 0), zl)) * (
            zl @ model.beta_z
        )
        se = terms.std() / math.sqrt(len(terms))
        assert abs(terms.mean() - xi @ model.landmark_coef()) <= 4 * se


def test_claim_rejects_a_smaller_constant_and_a_truncated_embedding():
    assert mv.run_check("tiny", 0).verdict == "holds"
    one = mv.run_check("tiny", 0, multiple=1.0)  # excess ≤ ε alone is false here
    assert one.verdict == "violated" and "excess(φ) ≤ 1ε" in one.reason
    trunc = mv.run_check("tiny", 0, rank=1)  # one canonical direction dropped
    assert trunc.verdict == "violated" and "excess(φ) ≤ excess(f)" in trunc.reason
