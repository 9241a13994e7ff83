"""Setting §11 (theory/collapse.py) against autograd, hand sums and Monte Carlo; the claim's
negative cases (no collapse predicted and shown; a wrong predicted set is violated)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import theory.claims.collapse as cc
from gessl.losses import infonce
from theory.collapse import (
    CollapseSetting,
    lemma2_x,
    max_principal_angle,
    same_branch_infonce,
    softmax_weights,
)


def _setting(seed: int = 0, anchor_augmented: bool = False) -> CollapseSetting:
    basis = np.linalg.qr(np.random.default_rng(seed).standard_normal((6, 6)))[0]
    return CollapseSetting(cc.DATA_VAR, cc.AUG_VAR, basis, anchor_augmented)


@pytest.mark.parametrize("negatives", ["same", "cross"])
@pytest.mark.parametrize("tau", [2.0, 0.6])
def test_lemma2_x_is_minus_the_gradient(negatives, tau):
    """Lemma 1–2 (and its cross-view analogue): −∂L/∂W = WX, for a non-square W."""
    rng = np.random.default_rng(1)
    x, xp = _setting().sample(30, rng)
    w = rng.standard_normal((4, 6))
    tw = torch.tensor(w, requires_grad=True)
    z, zp = torch.from_numpy(x) @ tw.T, torch.from_numpy(xp) @ tw.T
    if negatives == "same":
        loss = same_branch_infonce(z, zp, tau)
    else:
        loss = infonce(z, zp, temperature=tau, critic="neg_sq_distance").loss
    (g,) = torch.autograd.grad(loss, tw)
    xm = lemma2_x(w, x, xp, negatives, tau)
    assert np.allclose(xm, xm.T, atol=1e-13)
    assert np.allclose(-g.numpy(), w @ xm, rtol=0, atol=1e-12 * np.abs(g.numpy()).max())


def test_same_branch_infonce_by_hand():
    rng = np.random.default_rng(2)
    z, zp = (
        torch.from_numpy(rng.standard_normal((5, 3))),
        torch.from_numpy(rng.standard_normal((5, 3))),
    )
    tau = 0.8
    terms = []
    for i in range(5):
        pos = -float(((z[i] - zp[i]) ** 2).sum()) / tau
        neg = [-float(((z[i] - z[j]) ** 2).sum()) / tau for j in range(5) if j != i]
        terms.append(-pos + math.log(math.exp(pos) + sum(math.exp(v) for v in neg)))
    assert float(same_branch_infonce(z, zp, tau)) == pytest.approx(np.mean(terms), rel=1e-12)
    # with z_pos = z it is the library's cross-view InfoNCE on (z, z)
    lib = infonce(z, z, temperature=tau, critic="neg_sq_distance").loss
    assert float(same_branch_infonce(z, z, tau)) == pytest.approx(float(lib), rel=1e-12)


def test_softmax_weights_rows_and_positive():
    rng = np.random.default_rng(3)
    x, xp = _setting().sample(8, rng)
    w = rng.standard_normal((6, 6))
    for negatives in ("same", "cross"):
        a = softmax_weights(w, x, xp, negatives, 2.0)
        assert np.allclose(a.sum(axis=1), 1.0)
        z, zp = torch.from_numpy(x @ w.T), torch.from_numpy(xp @ w.T)
        cand = z if negatives == "same" else zp
        logits = -(torch.cdist(z, cand) ** 2) / 2.0
        logits[range(8), range(8)] = -((z - zp) ** 2).sum(1) / 2.0
        assert np.allclose(a, F.softmax(logits, dim=1).numpy(), atol=1e-12)


@pytest.mark.parametrize("negatives", ["same", "cross"])
def test_uniform_x_is_exact_on_an_exact_moment_batch(negatives):
    """At W = 0 every weight is 1/N; with the batch's moments equal to Σ_d, Σ_a the batch X is
    the closed form (2/τ)((N − 1)/N)(2Σ_d − Σ_a), resp. (2/τ)((N − 1)/N)·2Σ_d, to rounding."""
    s = _setting()
    x, xp = s.sample(40, np.random.default_rng(4), exact_moments=True)
    assert np.allclose(x.mean(axis=0), 0.0, atol=1e-13)
    assert np.allclose(np.cov(x.T), s.sigma_data(), atol=1e-12)
    assert np.allclose((xp - x).T @ (xp - x) / 40, s.sigma_aug(), atol=1e-12)
    for tau in (2.0, 0.5):
        got = lemma2_x(np.zeros((3, 6)), x, xp, negatives, tau)
        assert np.allclose(got, s.uniform_x(40, negatives, tau), atol=1e-13)


def test_uniform_x_monte_carlo_two_augmented_views():
    """Two augmented views (x + ε₁, x + ε₂): E X at uniform weights is (2/τ)((N − 1)/N)·2Σ_d for
    both kinds of negatives — the noise cancels and no direction is predicted to collapse."""
    s = _setting(anchor_augmented=True)
    rng = np.random.default_rng(5)
    n, reps = 12, 3000
    for negatives in ("same", "cross"):
        draws = np.array(
            [lemma2_x(np.zeros((2, 6)), *s.sample(n, rng), negatives, 2.0) for _ in range(reps)]
        )
        mean, se = draws.mean(axis=0), draws.std(axis=0) / math.sqrt(reps)
        assert np.all(np.abs(mean - s.uniform_x(n, negatives)) <= 4 * se + 1e-12)
        assert np.allclose(s.uniform_x(n, negatives), 2 * (n - 1) / n * s.sigma_data())
        assert s.predicted_collapsed(negatives).size == 0


def test_predicted_set_is_twice_the_signal():
    """The paper's views collapse a direction iff σ_a² > 2σ_d² (same-branch negatives), never
    with cross-view negatives."""
    basis = np.eye(3)
    s = CollapseSetting(np.array([0.3, 0.3, 1.0]), np.array([0.59, 0.61, 5.0]), basis)
    assert s.predicted_collapsed("same").tolist() == [1, 2]
    assert s.predicted_collapsed("cross").size == 0
    assert _setting().predicted_collapsed("same").tolist() == [4, 5]


def test_principal_angle():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((6, 2))
    assert max_principal_angle(a, a @ rng.standard_normal((2, 2))) == pytest.approx(0.0, abs=1e-7)
    e = np.eye(6)
    assert max_principal_angle(e[:, :2], e[:, 2:4]) == pytest.approx(math.pi / 2)
    assert max_principal_angle(e[:, :2], e[:, :3]) == pytest.approx(math.pi / 2)
    assert max_principal_angle(e[:, :0], e[:, :0]) == pytest.approx(math.pi / 2)


def test_bad_input():
    b = np.eye(2)
    with pytest.raises(ValueError, match="dimension"):
        CollapseSetting(np.ones(2), np.ones(3), b)
    with pytest.raises(ValueError, match="variances"):
        CollapseSetting(np.array([1.0, 0.0]), np.ones(2), b)
    with pytest.raises(ValueError, match="variances"):
        CollapseSetting(np.ones(2), np.array([1.0, -0.1]), b)
    with pytest.raises(ValueError, match="orthogonal"):
        CollapseSetting(np.ones(2), np.ones(2), 2 * b)
    s = CollapseSetting(np.ones(2), np.ones(2), b)
    with pytest.raises(ValueError, match="negatives"):
        s.uniform_x(4, "both")
    with pytest.raises(ValueError, match="n ≥ 2"):
        s.uniform_x(1)
    with pytest.raises(ValueError, match="negatives"):
        lemma2_x(np.eye(2), np.ones((3, 2)), np.ones((3, 2)), "other")
    with pytest.raises(ValueError, match="n > 4"):
        s.sample(4, np.random.default_rng(0), exact_moments=True)
    with pytest.raises(ValueError, match="paper's views"):
        CollapseSetting(np.ones(2), np.ones(2), b, True).sample(
            10, np.random.default_rng(0), exact_moments=True
        )


def test_sampler_is_seeded_and_views_share_the_signal():
    s = _setting(anchor_augmented=True)
    a1, p1 = s.sample(5, np.random.default_rng(7))
    a2, p2 = s.sample(5, np.random.default_rng(7))
    assert np.array_equal(a1, a2) and np.array_equal(p1, p2)
    big_a, big_p = s.sample(200_000, np.random.default_rng(8))
    cross = big_a.T @ big_p / len(big_a)  # Cov(x + ε₁, x + ε₂) = Σ_d
    assert np.allclose(cross, s.sigma_data(), atol=0.02)


# ---------------------------------------------------------------- the claim, negative cases
def test_no_collapse_predicted_and_none_shown_under_weak_augmentation():
    """Augmentation weaker than the signal everywhere: nothing is predicted, nothing collapses,
    and the check holds."""
    r = cc.check_collapse("tiny", 0, aug_var=0.5 * cc.DATA_VAR)
    assert r.verdict == "holds", r.reason
    assert r.details["predicted_same"].size == 0
    assert r.details["final_spectrum_same"].min() > cc.RETAINED


@pytest.mark.parametrize(
    "wrong",
    [
        {"same": [0, 1], "cross": []},  # the wrong directions
        {"same": [5], "cross": []},  # one direction too few
        {"same": [4, 5], "cross": [4, 5]},  # "the library's InfoNCE collapses too"
    ],
)
def test_a_wrong_predicted_set_is_violated(wrong):
    r = cc.check_collapse("tiny", 0, predicted={k: np.array(v) for k, v in wrong.items()})
    assert r.verdict == "violated", r.reason


def test_the_claim_is_deterministic():
    a = cc.check_collapse("tiny", 3)
    b = cc.check_collapse("tiny", 3)
    assert a.summary == b.summary and a.measured[4].y == b.measured[4].y
