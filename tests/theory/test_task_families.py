"""The Gaussian task families: Bayes logits against an independent density computation, I_t
against a Monte-Carlo InfoNCE curve, the views' marginals, pools, samplers and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from scipy.stats import multivariate_normal

from gessl.losses import infonce
from theory.claims.families import expected_information
from theory.task_families import (
    FAMILIES,
    FamilySampler,
    HomogeneousTasks,
    NoiseLevelTasks,
    SubspaceTasks,
    TaskPool,
    make_family,
)

f64 = torch.float64


def _joint_cov(family, params_t: np.ndarray) -> np.ndarray:
    """Covariance of two views (u, v) of one sample of one task, written from the generative
    model (not from the family's formulas): latent covariance + each view's own noise."""
    d = family.dim
    c2 = family.latent_scale**2
    if isinstance(family, SubspaceTasks):
        p = params_t @ params_t.T
        s2 = family.noise**2
        latent = c2 * p
        noise = s2 * p + (c2 + s2) * (np.eye(d) - p)  # s·Pe and √(c²+s²)(I − P)e, independent
    else:
        latent = c2 * np.eye(d)
        noise = float(params_t) ** 2 * np.eye(d)
    return np.block([[latent + noise, latent], [latent, latent + noise]])


@pytest.mark.parametrize(
    "family",
    [
        HomogeneousTasks(dim=3, latent_scale=1.3, noise=0.7),
        SubspaceTasks(dim=4, k=2, latent_scale=0.9, noise=0.6),
        SubspaceTasks(dim=5, k=1, latent_scale=1.5, noise=1.1),
        NoiseLevelTasks(dim=3, latent_scale=1.0, noise_low=0.4, noise_high=1.4),
    ],
    ids=["homogeneous", "subspace_k2", "subspace_k1", "noise_level"],
)
def test_bayes_posterior_equals_the_joint_density_ratio(family):
    """π*_i ∝ p(u, v_i)/p(v_i), each density from the joint Gaussian (SciPy), to 1e-10."""
    gen = torch.Generator().manual_seed(3)
    (u, v), params = family.sample_views(gen, 3, 5, 2)
    ours = family.bayes_log_probs(u, v, params).numpy()
    d = family.dim
    for t in range(3):
        cov = _joint_cov(family, params[t].numpy())
        joint = multivariate_normal(np.zeros(2 * d), cov)
        marginal = multivariate_normal(np.zeros(d), cov[d:, d:])
        for a in range(5):
            logits = np.array(
                [
                    joint.logpdf(np.concatenate([u[t, a].numpy(), v[t, i].numpy()]))
                    - marginal.logpdf(v[t, i].numpy())
                    for i in range(5)
                ]
            )
            np.testing.assert_allclose(ours[t, a], log_softmax(logits), atol=1e-10, rtol=0)


def test_single_views_of_the_subspace_family_reveal_nothing():
    """Each view is N(0, (c²+s²)I) in every task; the pair is correlated only inside the
    task's subspace, with correlation ρ = c²/(c²+s²)."""
    fam = SubspaceTasks(dim=4, k=2, latent_scale=1.0, noise=0.5)
    gen = torch.Generator().manual_seed(0)
    params = fam.sample_params(gen, 1)
    u, v = fam.views_of(gen, params, 60000, 2)
    cov = torch.cov(u[0].T)
    assert torch.allclose(cov, 1.25 * torch.eye(4, dtype=f64), atol=0.04)
    basis = params[0]
    cross = (u[0] @ basis).T @ (v[0] @ basis) / 60000
    assert torch.allclose(cross, fam.rho * 1.25 * torch.eye(2, dtype=f64), atol=0.03)
    outside = torch.linalg.svd(torch.eye(4, dtype=f64) - basis @ basis.T).U[:, :2]
    assert ((u[0] @ outside).T @ (v[0] @ outside) / 60000).abs().max() < 0.03
    assert torch.allclose(basis.T @ basis, torch.eye(2, dtype=f64), atol=1e-12)


def test_haar_frames_are_isotropic_on_average():
    fam = SubspaceTasks(dim=3, k=1)
    basis = fam.sample_params(torch.Generator().manual_seed(1), 20000)
    mean_projector = (basis @ basis.transpose(-1, -2)).mean(0)
    assert torch.allclose(mean_projector, torch.eye(3, dtype=f64) / 3, atol=0.01)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_mutual_information_against_a_monte_carlo_infonce_curve(name):
    """log N − E InfoNCE of the Bayes critic rises with N and approaches E_t I_t from below
    (within 4 SE of Monte Carlo; the remaining bias at N = 512 is small)."""
    fam = make_family(name)
    info = expected_information(fam)
    gen = torch.Generator().manual_seed(11)
    est = []
    for n in (4, 32, 512):
        (u, v), params = fam.sample_views(gen, max(40000 // n, 80), n, 2)
        lp = fam.bayes_log_probs(u, v, params)
        per_task = math.log(n) + lp.diagonal(dim1=-2, dim2=-1).mean(-1)
        se = float(per_task.std() / math.sqrt(per_task.numel()))
        est.append((float(per_task.mean()), se))
    (a, _), (b, _), (c, sc) = est
    assert a < b < c
    assert c <= info + 4 * sc
    assert info - c < 0.12 * info  # close to the limit at N = 512
    # the same number from the library's InfoNCE loss on Bayes-representing inputs
    (u, v), params = fam.sample_views(gen, 50, 8, 2)
    lp = fam.bayes_log_probs(u, v, params)
    ce = float(-lp.diagonal(dim1=-2, dim2=-1).mean())
    logits_as_embeddings = infonce(lp, torch.eye(8, dtype=f64).expand(50, 8, 8), 1.0, "dot")
    assert float(logits_as_embeddings.loss) == pytest.approx(ce, rel=1e-12)


def test_noise_level_information_varies_by_task_and_homogeneous_does_not():
    gen = torch.Generator().manual_seed(0)
    noise = NoiseLevelTasks(dim=4, noise_low=0.3, noise_high=1.5)
    s = noise.sample_params(gen, 500)
    assert float(s.min()) >= 0.3 and float(s.max()) <= 1.5 and float(s.std()) > 0.3
    info = noise.mutual_information(s)
    assert float(info.max() / info.min()) > 5
    assert float(info.mean()) == pytest.approx(expected_information(noise), rel=0.05)
    home = HomogeneousTasks(dim=4, noise=0.8)
    flat = home.mutual_information(home.sample_params(gen, 7))
    assert torch.allclose(flat, torch.full((7,), -2 * math.log(1 - (1 / 1.64) ** 2), dtype=f64))


def test_pools_are_fixed_nested_and_sampled_with_replacement():
    fam = SubspaceTasks(dim=4, k=2)
    pool = TaskPool(fam, 10, 6, torch.Generator().manual_seed(0))
    sub = pool.first(3)
    assert len(sub) == 3 and torch.equal(sub.batch.query_a, pool.batch.query_a[:3])
    assert torch.equal(sub.params, pool.params[:3])
    b = sub.sample(8, 6, torch.Generator().manual_seed(1))
    stored = {tuple(x.flatten().tolist()) for x in sub.batch.support_a}
    assert b.n_tasks == 8 and all(tuple(x.flatten().tolist()) in stored for x in b.support_a)
    with pytest.raises(ValueError, match="n_samples must be between 2 and the pool's per-task"):
        sub.sample(2, 7, torch.Generator())
    # N < m: each drawn task contributes N of its m samples, the same rows in every view
    five = sub.sample(8, 5, torch.Generator().manual_seed(2))
    assert five.support_a.shape == (8, 5, 4)
    for t in range(8):
        task = next(
            i
            for i in range(3)
            if any(torch.equal(five.query_b[t, 0], r) for r in sub.batch.query_b[i])
        )
        rows = [
            next(
                j
                for j in range(6)
                if torch.equal(five.support_a[t, r], sub.batch.support_a[task, j])
            )
            for r in range(5)
        ]
        assert len(set(rows)) == 5
        for r, j in enumerate(rows):
            assert torch.equal(five.query_b[t, r], sub.batch.query_b[task, j])
    with pytest.raises(ValueError, match="n_tasks must be <= the pool size 10"):
        pool.first(11)
    fresh = FamilySampler(fam).sample(4, 6, torch.Generator().manual_seed(0))
    assert fresh.support_a.shape == (4, 6, 4) and fresh.query_b.dtype == f64


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_family("sphere"), r"family must be one of \('homogeneous', 'subspace'"),
        (lambda: make_family("subspace", k=4, dim=4), r"k must satisfy 1 <= k < dim = 4"),
        (lambda: SubspaceTasks(dim=3, k=0), "k must be an integer >= 1"),
        (lambda: SubspaceTasks(noise=0.0), "noise must be a number > 0"),
        (lambda: HomogeneousTasks(noise=-1), "noise must be a number > 0"),
        (lambda: NoiseLevelTasks(noise_low=0.0), "noise_low must be a number > 0"),
        (lambda: NoiseLevelTasks(noise_low=1.0, noise_high=0.5), "noise_high must be >= noise_low"),
        (lambda: make_family("noise_level", noise=1.0), "unknown option 'noise'; valid options"),
        (lambda: make_family("homogeneous").sample_views(torch.Generator(), 0, 4), "tasks must"),
    ],
)
def test_bad_input_names_the_argument_and_the_allowed_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()
