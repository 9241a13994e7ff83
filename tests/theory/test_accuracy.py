"""σ bounds accuracy (theory/accuracy.py, claim ``sigma_accuracy_bound``): the chain
gap ≤ 2TV ≤ √(2KL) on hand values and random distributions, the decision-flipping critic, the
fitted critics, bad input, and the claim turning violated under a too-tight bound."""

from __future__ import annotations

import math

import pytest
import torch

import theory.claims.accuracy as accuracy_claim
from gessl.losses import infonce
from theory.accuracy import (
    accuracy_chain,
    accuracy_gap_bound,
    fit_bilinear_critic,
    fit_cosine_temperature,
    flip_log_probs,
)
from theory.claims import get_claim
from theory.gaussian_task import SphereTasks

f64 = torch.float64


def _log(p: list[float]) -> torch.Tensor:
    return torch.tensor(p, dtype=f64).log().reshape(1, 1, -1)


def test_chain_on_hand_values():
    pb, pm = [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]
    chain = accuracy_chain(_log(pm), _log(pb), labels=torch.tensor([0]))
    assert float(chain.gap) == pytest.approx(0.5 - 0.3, abs=1e-15)  # î = 1
    assert float(chain.tv2) == pytest.approx(0.3 + 0.2 + 0.1, abs=1e-15)
    kl = sum(a * math.log(a / b) for a, b in zip(pm, pb))
    kl_ex = sum(b * math.log(b / a) for a, b in zip(pm, pb))
    assert float(chain.kl) == pytest.approx(kl, abs=1e-14)
    assert float(chain.kl_excess) == pytest.approx(kl_ex, abs=1e-14)
    assert float(chain.gap01) == 1.0  # Bayes is right on label 0, the model is wrong
    same = accuracy_chain(_log(pb), _log(pb), labels=torch.tensor([2]))
    assert float(same.gap) == 0 and float(same.tv2) == 0 and float(same.gap01) == 0


def test_chain_holds_for_random_distributions():
    """gap ≤ 2TV ≤ √(2KL) in both directions, for peaked, flat and near-tied pairs."""
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 5.0, 20.0):
        lb = torch.log_softmax(scale * torch.randn(50, 40, 6, generator=g, dtype=f64), -1)
        lq = torch.log_softmax(lb + scale * 0.3 * torch.randn(lb.shape, generator=g, dtype=f64), -1)
        c = accuracy_chain(lq, lb)
        assert float(c.gap.min()) >= 0
        assert bool((c.gap <= c.tv2 + 1e-12).all())
        for kl in (c.kl, c.kl_excess):
            assert bool((c.tv2 <= accuracy_gap_bound(kl.clamp(min=0)) + 1e-12).all())


def test_flip_critic_attains_the_argmax_step():
    g = torch.Generator().manual_seed(1)
    lb = torch.log_softmax(torch.randn(20, 16, 8, generator=g, dtype=f64), -1)
    lq = flip_log_probs(lb, margin=1e-3)
    assert torch.allclose(torch.logsumexp(lq, -1), torch.zeros(20, 16, dtype=f64), atol=1e-12)
    c = accuracy_chain(lq, lb)
    top = lb.exp().topk(2, dim=-1).values
    p1_p2 = top[..., 0] - top[..., 1]
    assert torch.allclose(c.gap, p1_p2, atol=1e-15)
    assert torch.allclose(c.tv2, (1 + 1e-3) * p1_p2, atol=1e-15)
    assert bool((lq.argmax(-1) != lb.argmax(-1)).all())


def test_fitted_critics_lower_the_infonce_loss():
    model = SphereTasks(n_classes=16, dim=5, noise=0.7)
    u, v = model.sample(torch.Generator().manual_seed(2), 64)
    m = fit_bilinear_critic(u, v, steps=60)
    start = float(infonce(u @ torch.zeros(5, 5, dtype=f64), v, 1.0, "dot").loss)
    trained = float(infonce(u @ m, v, 1.0, "dot").loss)
    bayes = float(
        torch.nn.functional.cross_entropy(
            model.bayes_logits(u, v).reshape(-1, 16), torch.arange(16).repeat(64)
        )
    )
    assert start == pytest.approx(math.log(16))
    assert bayes - 0.05 < trained < bayes + 0.1  # close to the Bayes loss (a bilinear optimum)
    tau = fit_cosine_temperature(u, v, steps=60)
    assert 0.05 < tau < 1.0
    assert torch.equal(fit_bilinear_critic(u, v, steps=0), torch.zeros(5, 5, dtype=f64))


def test_bad_input():
    lp = _log([0.5, 0.5])
    with pytest.raises(ValueError, match="must both be"):
        accuracy_chain(lp, _log([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="must both be"):
        accuracy_chain(lp[0], lp[0])
    with pytest.raises(ValueError, match="N >= 2"):
        accuracy_chain(torch.zeros(1, 1, 1, dtype=f64), torch.zeros(1, 1, 1, dtype=f64))
    with pytest.raises(ValueError, match="not normalised"):
        accuracy_chain(lp + 0.1, lp)
    with pytest.raises(ValueError, match=">= 0"):
        accuracy_gap_bound(-0.1)
    with pytest.raises(ValueError, match=">= 0"):
        accuracy_gap_bound(torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="margin"):
        flip_log_probs(lp, margin=0.0)
    u = torch.randn(2, 4, 3, dtype=f64)
    with pytest.raises(ValueError, match="steps"):
        fit_bilinear_critic(u, u, steps=-1)


def _too_tight(sigma_per_query):
    """√(σ/8) instead of √(2σ): a quarter of the true bound."""
    if isinstance(sigma_per_query, torch.Tensor):
        return torch.sqrt(sigma_per_query / 8)
    return math.sqrt(sigma_per_query / 8)


def test_claim_is_violated_by_a_too_tight_bound(monkeypatch):
    monkeypatch.setattr(accuracy_claim, "accuracy_gap_bound", _too_tight)
    result = get_claim("sigma_accuracy_bound").check("tiny", 0)
    assert result.verdict == "violated"
    assert "decision flip" in result.reason  # the near-worst critic exceeds √(σ/8)


def test_claim_is_violated_when_the_posterior_is_wrong(monkeypatch):
    """An over-confident 'Bayes' posterior (logits × 3) no longer predicts the 0/1 accuracy:
    the calibration check catches a broken setting."""
    settings = accuracy_claim._settings

    def wrong() -> dict:
        def scale(sample):
            def sample3(g, t):
                u, v, b = sample(g, t)
                return u, v, 3.0 * b

            return sample3

        return {k: scale(s) for k, s in settings().items()}

    monkeypatch.setattr(accuracy_claim, "_settings", wrong)
    result = get_claim("sigma_accuracy_bound").check("tiny", 0)
    assert result.verdict == "violated"
    assert "0/1 gap = expected gap" in result.reason


def test_claim_details_on_tiny():
    result = get_claim("sigma_accuracy_bound").check("tiny", 1)
    assert result.verdict == "holds"
    rows = result.details["critics"]
    assert len(rows) == 38  # 7 critics × 5 task models, 3 on the near-tie posteriors
    tie = [r for r in rows if r["setting"] == "near tie"]
    flip = next(r for r in tie if r["critic"].startswith("decision flip"))
    assert len(tie) == 3 and flip["gap"] / flip["bound_sigma"] > 0.8  # the bound's sharp case
    for r in rows:
        assert r["gap"] <= r["tv2"] + 1e-12
        assert r["slack_sigma"] >= 0 and r["slack_sigma_excess"] >= 0
    assert all(r["sigma"] == 0 for r in rows if r["critic"] == "Bayes")
