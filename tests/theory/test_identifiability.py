"""Setting A14 (theory/identifiability.py) and the claim contrastive_identifiability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from theory.claims.base import N_SE
from theory.claims.identifiability import _ordering, _threshold, run_identifiability
from theory.identifiability import (
    EncoderEnsemble,
    InjectiveGenerator,
    fold,
    linear_identifiability,
    sample_marginal,
    sample_vmf_s2,
    vmf_mean_resultant_length,
)
from theory.sphere import sample_sphere

f64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mean_resultant_length_hand_values():
    assert vmf_mean_resultant_length(1.0) == pytest.approx(1 / math.tanh(1.0) - 1.0, rel=1e-15)
    assert vmf_mean_resultant_length(1e3) == pytest.approx(1 - 1e-3, rel=1e-12)
    # the small-κ series joins the closed form
    assert vmf_mean_resultant_length(0.999e-3) == pytest.approx(
        vmf_mean_resultant_length(1.001e-3), rel=3e-3
    )
    assert vmf_mean_resultant_length(1e-6) == pytest.approx(1e-6 / 3, rel=1e-9)
    with pytest.raises(ValueError, match="kappa"):
        vmf_mean_resultant_length(0.0)


@pytest.mark.parametrize("kappa", [0.5, 4.0, 50.0])
def test_vmf_sampler_mean_cosine_and_cdf(kappa):
    """E[μᵀz̃] = A(κ) within 4 SE; the cosine follows F(w) = (e^{κw} − e^{−κ})/(e^κ − e^{−κ});
    samples are unit vectors and the tangent part averages to zero."""
    n = 40000
    mu = sample_sphere(_gen(1), n, 3)
    z = sample_vmf_s2(_gen(2), mu, kappa)
    assert torch.allclose(z.norm(dim=1), torch.ones(n, dtype=f64), atol=1e-12)
    w = (z * mu).sum(1).numpy()
    se = w.std() / math.sqrt(n)
    assert abs(w.mean() - vmf_mean_resultant_length(kappa)) <= N_SE * se

    def cdf(x: np.ndarray) -> np.ndarray:  # stable form of the cosine's CDF
        return np.exp(kappa * (x - 1) - np.log1p(-np.exp(-2 * kappa))) - np.exp(
            -2 * kappa - np.log1p(-np.exp(-2 * kappa))
        )

    assert kstest(w, cdf).pvalue > 1e-3
    tangent = z - torch.from_numpy(w)[:, None] * mu
    assert float(tangent.mean(0).norm()) < 4 * math.sqrt(3 * (1 - np.mean(w**2)) / n)


def test_vmf_sampler_is_finite_for_huge_kappa_and_checks_input():
    mu = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=f64)
    z = sample_vmf_s2(_gen(0), mu, 1e6)
    assert torch.isfinite(z).all() and torch.allclose(z, mu, atol=1e-2)
    with pytest.raises(ValueError, match="unit"):
        sample_vmf_s2(_gen(0), 2 * mu, 1.0)
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        sample_vmf_s2(_gen(0), mu[:, :2], 1.0)
    with pytest.raises(ValueError, match="kappa"):
        sample_vmf_s2(_gen(0), mu, -1.0)


def test_marginals():
    z = sample_marginal(_gen(3), torch.tensor([0.0, 10.0], dtype=f64), 20000)
    assert float(z[0].mean(0).norm()) < 0.03  # uniform: mean 0
    assert float(z[1, :, 2].mean()) == pytest.approx(vmf_mean_resultant_length(10.0), abs=0.01)


def test_generator_is_injective_and_fold_is_two_to_one():
    g = InjectiveGenerator.random(_gen(4), 3)
    s1, s2 = g.min_singular_values()
    assert s1 >= 0.5 and s2 >= 0.5
    z = sample_sphere(_gen(5), 2000, 3).expand(3, -1, -1).contiguous()
    x = g(z)
    # injective on the sample: distinct latents give distinct observations
    dz = torch.cdist(z[0], z[0]) + torch.eye(2000, dtype=f64)
    dx = torch.cdist(x[0], x[0]) + torch.eye(2000, dtype=f64)
    assert float((dx / dz).min()) > 1e-3
    mirror = z * torch.tensor([1.0, 1.0, -1.0], dtype=f64)
    assert torch.allclose(fold(mirror), fold(z))
    g.folded[:] = True
    assert torch.allclose(g(mirror), g(z))


def test_linear_identifiability_of_orthogonal_and_of_folded_maps():
    z = sample_sphere(_gen(6), 4000, 3)
    q = torch.linalg.qr(torch.randn(3, 3, generator=_gen(7), dtype=f64))[0]
    r2, sv = linear_identifiability(z[:2000], z[:2000] @ q.T, z[2000:], z[2000:] @ q.T)
    assert r2 == pytest.approx(1.0, abs=1e-12) and torch.allclose(sv, torch.ones(3, dtype=f64))
    r2f, svf = linear_identifiability(z[:2000], fold(z[:2000]), z[2000:], fold(z[2000:]))
    assert r2f < 2 / 3 + 0.01 and float(svf[-1] / svf[0]) < 0.1


def test_encoder_standardises_its_outputs():
    enc = EncoderEnsemble(_gen(8), 2)
    x = torch.randn(2, 500, 10, generator=_gen(9), dtype=f64)
    out = enc(x)
    assert torch.allclose(out.mean(1), torch.zeros(2, 3, dtype=f64), atol=1e-12)
    enc.freeze_statistics(x)
    assert torch.allclose(enc(x), out, atol=1e-12)


def test_threshold_and_ordering_judgements():
    # one-sided: a shortfall is violated whatever the loss (training quality is its own check)
    assert _threshold("R²", [0.7, 0.71, 0.69], 0.95).verdict == "violated"
    assert _threshold("R²", [0.97, 0.98, 0.99], 0.95).verdict == "holds"
    assert _ordering("m", [0.3, 0.31, 0.29]).verdict == "holds"
    assert _ordering("m", [0.01, -0.01, 0.0]).verdict == "violated"
    assert _ordering("m", [0.3, -0.1, 0.1]).verdict == "inconclusive"


def test_claim_holds_on_tiny_with_the_stated_numbers():
    r = run_identifiability("tiny", 0)
    assert r.verdict == "holds", r.reason
    assert np.mean(r.details["r2"]["matching"]) >= 0.95
    assert r.details["loss_minus_orthogonal_loss"]["mean"] > 0  # h(z) = z is the optimum


def test_claim_is_violated_when_the_mismatched_marginal_is_uniform():
    """The negative test: with the "non-uniform" setting made uniform (the same conditions as
    the matching one) there is no R² drop, and the ordering check must say violated."""
    r = run_identifiability("tiny", 0, marginal_kappa=0.0)
    assert r.verdict == "violated"
    assert "non-uniform marginal: R² drop" in r.reason
