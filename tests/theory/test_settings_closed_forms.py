"""Each closed form of theory/ against brute force or Monte Carlo (tolerances in SE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from gessl.losses import spectral
from theory.arora import LatentClassMixture, logistic2
from theory.dynamics import design_with_correlation, half_time, logistic_trajectory
from theory.gaussian_task import LatentViewTasks, SphereTasks, bayes_augmented_embeddings
from theory.graphs import block_graph, random_graph
from theory.linear_gaussian import random_instance, subspace_sin2
from theory.multitask import MultiTaskLinear
from theory.sphere import log_mean_exp_dot_uniform, sample_sphere, uniformity_closed_form

f64 = torch.float64


# ---------------------------------------------------------------- A1 graphs
def test_graph_weights_psd_and_normalised():
    g = random_graph(np.random.default_rng(0))
    assert g.weights.sum() == pytest.approx(1.0)
    assert np.linalg.eigvalsh(g.weights).min() > -1e-14
    assert g.gammas[0] == pytest.approx(1.0) and g.gammas.min() > -1e-12


def test_spectral_optimum_matches_numerical_minimisation():
    g = random_graph(np.random.default_rng(1), n_nat=8, n_aug=10)
    k = 2
    res = minimize(
        lambda v: g.population_loss(v.reshape(10, k)),
        np.random.default_rng(2).standard_normal(10 * k),
        method="BFGS",
        options={"gtol": 1e-10},
    )
    assert res.fun == pytest.approx(-np.sum(g.gammas[:k] ** 2), abs=1e-8)


def test_pair_sampler_matches_edge_weights():
    g = random_graph(np.random.default_rng(3), n_nat=5, n_aug=6)
    a, b = g.sample_pairs(np.random.default_rng(4), 200_000)
    freq = np.zeros((6, 6))
    np.add.at(freq, (a, b), 1.0)
    freq /= len(a)
    se = np.sqrt(g.weights * (1 - g.weights) / len(a))
    assert np.all(np.abs(freq - g.weights) <= 4 * se + 1e-12)


def test_block_graph_delta_and_probe():
    g = block_graph(n_per_class=10, classes=3, stay=0.5, cross=0.02)
    assert g.delta == pytest.approx(0.02)
    assert g.probe_error(g.optimal_features(3)) == 0.0
    assert g.probe_error(g.optimal_features(1)) > 0.3  # one feature cannot separate 3 classes


def test_eigenvalue_bound_is_infinite_when_disconnected():
    g = block_graph(n_per_class=5, classes=2, stay=0.5, cross=0.0)  # two components
    assert g.laplacian_eigenvalues[1] < 1e-10
    assert math.isinf(g.eigenvalue_bound(1))


# ---------------------------------------------------------------- A2 linear-Gaussian
def test_spectral_population_formula_by_monte_carlo():
    rng = np.random.default_rng(5)
    m = random_instance(rng, d=4)
    w = rng.standard_normal((2, 4)) * 0.5
    x1, x2 = m.sample(rng, 100_000)
    vals = [
        float(spectral(torch.from_numpy(a @ w.T), torch.from_numpy(b @ w.T)).loss)
        for a, b in zip(np.array_split(x1, 50), np.array_split(x2, 50))
    ]
    se = np.std(vals) / math.sqrt(50)
    assert abs(np.mean(vals) - m.spectral_population_loss(w)) < 4 * se


def test_subspace_sin2():
    a = np.array([[1.0, 0, 0], [0, 1, 0]])
    assert subspace_sin2(a, np.array([[2.0, 1, 0], [0, 3, 0]])) == pytest.approx(0.0, abs=1e-15)
    assert subspace_sin2(a, np.array([[1.0, 0, 0], [0, 0, 1]])) == pytest.approx(1.0)


# ---------------------------------------------------------------- A3 task model
def test_sphere_bayes_logits_equal_dot_critic_up_to_row_constants():
    m = SphereTasks(n_classes=6, dim=3, noise=0.5, radius=2.0)
    q, p = m.sample(torch.Generator().manual_seed(0), 4)
    a = torch.log_softmax(m.bayes_logits(q, p), -1)
    b = torch.log_softmax(q @ p.transpose(-1, -2) / m.bayes_temperature, -1)
    assert torch.allclose(a, b, atol=1e-12)


def test_latent_view_posterior_equals_generic_gaussian_density_ratio():
    """π*_i ∝ p(u, v_i)/p(v_i) from the joint Gaussian of (u, v) given a shared latent."""
    m = LatentViewTasks(n_classes=5, dim=2, latent_scale=1.0, noise=0.8)
    u, v = m.sample(torch.Generator().manual_seed(1), 1)
    c2, s2, d = m.latent_scale**2, m.noise**2, m.dim
    joint = multivariate_normal(
        np.zeros(2 * d),
        np.block(
            [[(c2 + s2) * np.eye(d), c2 * np.eye(d)], [c2 * np.eye(d), (c2 + s2) * np.eye(d)]]
        ),
    )
    marg = multivariate_normal(np.zeros(d), (c2 + s2) * np.eye(d))
    uu, vv = u[0].numpy(), v[0].numpy()
    generic = np.array(
        [
            [joint.logpdf(np.r_[uu[a], vv[i]]) - marg.logpdf(vv[i]) for i in range(5)]
            for a in range(5)
        ]
    )
    closed = m.bayes_logits(u, v)[0].numpy()
    diff = generic - closed
    assert np.allclose(diff - diff[:, :1], 0.0, atol=1e-10)  # equal up to a per-anchor constant


def test_augmented_embeddings_reproduce_bayes_logits():
    m = LatentViewTasks(n_classes=4, dim=3)
    u, v = m.sample(torch.Generator().manual_seed(2), 3)
    ua, va = bayes_augmented_embeddings(m, u, v)
    assert torch.allclose(ua @ va.transpose(-1, -2), m.bayes_logits(u, v), atol=1e-12)


def test_mutual_information_by_monte_carlo():
    """I(U;V) = E log p(v|u)/p(v) for the same-latent pair (u, v)."""
    m = LatentViewTasks(n_classes=2, dim=2, latent_scale=1.0, noise=0.8)
    rng = np.random.default_rng(3)
    n, c2, s2 = 200_000, 1.0, 0.64
    x = rng.standard_normal((n, 2))
    u, v = x + 0.8 * rng.standard_normal((n, 2)), x + 0.8 * rng.standard_normal((n, 2))
    rho = c2 / (c2 + s2)
    cond_var = (c2 + s2) * (1 - rho**2)
    lr = (
        -np.sum((v - rho * u) ** 2, 1) / (2 * cond_var)
        - np.log(cond_var)
        + np.sum(v**2, 1) / (2 * (c2 + s2))
        + np.log(c2 + s2)
    )
    assert abs(lr.mean() - m.mutual_information) < 4 * lr.std() / math.sqrt(n)


# ---------------------------------------------------------------- A4 Arora
def test_arora_quadrature_matches_monte_carlo():
    rng = np.random.default_rng(4)
    mix = LatentClassMixture(1.5 * rng.standard_normal((3, 4)), np.array([0.5, 0.3, 0.2]))
    w = 0.5 * rng.standard_normal((2, 4))
    x, c = mix.sample_anchors(rng, 3)
    l_un, _ = mix.per_anchor_terms(w, x, c)
    n = 100_000
    for i in range(3):
        cn = rng.choice(3, size=n, p=mix.rho)
        xp = mix.mu[c[i]] + rng.standard_normal((n, 4))
        xn = mix.mu[cn] + rng.standard_normal((n, 4))
        vals = logistic2(((xp - xn) @ w.T) @ (w @ x[i]))
        assert abs(vals.mean() - l_un[i]) < 4 * vals.std() / math.sqrt(n)
    assert logistic2(np.array([0.0]))[0] == pytest.approx(1.0)


# ---------------------------------------------------------------- A5 multi-task
def test_method_of_moments_expectation_and_heads():
    m = MultiTaskLinear(d=6, k=2, noise=0.3, n=4)
    rng = np.random.default_rng(5)
    b, _, x, y = m.sample(rng, 20)
    heads = m.task_heads(b, x, y)
    ref = np.stack([np.linalg.lstsq(x[t] @ b, y[t], rcond=None)[0] for t in range(20)])
    assert np.allclose(heads, ref, atol=1e-10)
    b, _, x, y = m.sample(rng, 20_000)
    assert subspace_sin2(m.method_of_moments(x, y).T, b.T) < 0.05
    assert subspace_sin2(m.alt_min(x, y).T, b.T) < 1e-3


# ---------------------------------------------------------------- A6 dynamics
def test_design_correlation_and_logistic_solution():
    rng = np.random.default_rng(6)
    u = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    x, gamma = design_with_correlation(np.array([1.0, 0.5, 0.2]), u)
    assert np.allclose(x.numpy().T @ x.numpy() / 3, gamma, atol=1e-12)
    t, h, gm, c0 = 0.7, 1e-6, 0.5, 1e-2
    c = logistic_trajectory(np.array([t]), gm, c0)[0]
    dc = (
        logistic_trajectory(np.array([t + h]), gm, c0)
        - logistic_trajectory(np.array([t - h]), gm, c0)
    )[0] / (2 * h)
    assert dc == pytest.approx(8 * gm * c * (1 - c), rel=1e-7)
    assert logistic_trajectory(np.array([half_time(gm, c0)]), gm, c0)[0] == pytest.approx(0.5)


# ---------------------------------------------------------------- A7 sphere
@pytest.mark.parametrize("kappa", [0.3, 2.5, 40.0])
def test_sphere_partition_function(kappa):
    assert log_mean_exp_dot_uniform(kappa, 3) == pytest.approx(math.log(math.sinh(kappa) / kappa))
    from scipy.special import i0

    assert log_mean_exp_dot_uniform(kappa, 2) == pytest.approx(math.log(i0(kappa)), rel=1e-12)


def test_uniformity_closed_form_by_monte_carlo():
    g = torch.Generator().manual_seed(7)
    x, y = sample_sphere(g, 200_000, 3), sample_sphere(g, 200_000, 3)
    vals = torch.exp(-2.0 * (x - y).pow(2).sum(1))
    est, se = float(vals.mean()), float(vals.std()) / math.sqrt(200_000)
    assert abs(est - math.exp(uniformity_closed_form(2.0, 3))) < 4 * se


def test_latent_views_share_latents_and_extend_sample():
    m = LatentViewTasks(n_classes=6, dim=3, latent_scale=1.0, noise=0.5)
    u, v = m.sample(torch.Generator().manual_seed(4), 2000)
    views = m.sample_views(torch.Generator().manual_seed(4), 2000, 4)
    assert torch.equal(u, views[0]) and torch.equal(v, views[1])
    # two views of one latent: Cov = c² between views, c² + s² within a view (per coordinate)
    a, b = views[2].reshape(-1), views[3].reshape(-1)
    cov = float((a * b).mean())
    se = math.sqrt(float(((a * b) - cov).pow(2).mean()) / a.numel())
    assert abs(cov - 1.0) < 4 * se
