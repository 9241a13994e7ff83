"""σ-measurement: direction, non-negativity, invariances and the excess-loss identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gessl.sigma import kl_rows, sigma, sigma_excess, sigma_from_logits

f64 = torch.float64


def _lp(p) -> torch.Tensor:
    return torch.tensor(p, dtype=f64).log()


def test_hand_computed_directions():
    """p = (.5, .5), q = (.9, .1): KL(p‖q) = 0.510826, KL(q‖p) = 0.368064 (by hand)."""
    p, q = _lp([[0.5, 0.5]]), _lp([[0.9, 0.1]])
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl_pq == pytest.approx(0.510826, abs=1e-6)
    assert kl_qp == pytest.approx(0.368064, abs=1e-6)
    # sigma: KL(model ‖ opt); sigma_excess: KL(opt ‖ model)
    assert float(sigma(q, p)) == pytest.approx(kl_qp, rel=1e-14)
    assert float(sigma_excess(q, p)) == pytest.approx(kl_pq, rel=1e-14)


def test_sums_over_queries_and_averages_over_tasks():
    g = torch.Generator().manual_seed(0)
    lm = torch.log_softmax(torch.randn(3, 5, 4, generator=g, dtype=f64), dim=-1)
    lo = torch.log_softmax(torch.randn(3, 5, 4, generator=g, dtype=f64), dim=-1)
    per_task = [float(sigma(lm[t], lo[t])) for t in range(3)]
    assert float(sigma(lm, lo)) == pytest.approx(np.mean(per_task), rel=1e-13)
    assert per_task[0] == pytest.approx(float(kl_rows(lm[0], lo[0]).sum()), rel=1e-13)
    assert float(sigma_from_logits(lm * 3, lo * 3)) > 0  # logits need not be normalised


logits = arrays(np.float64, (3, 4), elements=st.floats(-8, 8))


@given(a=logits, b=logits, perm=st.permutations(range(4)), rows=st.permutations(range(3)))
def test_nonnegative_zero_iff_equal_and_relabeling_invariant(a, b, perm, rows):
    la = torch.log_softmax(torch.tensor(a), dim=-1)
    lb = torch.log_softmax(torch.tensor(b), dim=-1)
    for f in (sigma, sigma_excess):
        v = float(f(la, lb))
        assert v >= -1e-12
        assert float(f(la, la)) == pytest.approx(0.0, abs=1e-12)
        # a common relabeling of the task's classes, and a reordering of the queries
        assert float(f(la[:, perm], lb[:, perm])) == pytest.approx(v, rel=1e-9, abs=1e-12)
        assert float(f(la[list(rows)], lb[list(rows)])) == pytest.approx(v, rel=1e-9, abs=1e-12)
    if not np.allclose(la.numpy(), lb.numpy(), atol=1e-6):
        assert float(sigma(la, lb)) > 0 and float(sigma_excess(la, lb)) > 0


def test_sigma_excess_is_excess_cross_entropy():
    """Σ_x KL(p*‖q) = Σ_x (E_{y~p*} CE(q, y) − E_{y~p*} CE(p*, y)): exactly in expectation, and
    by Monte Carlo over labels drawn from p*, within 4 standard errors."""
    g = torch.Generator().manual_seed(1)
    lp_opt = torch.log_softmax(torch.randn(20, 6, generator=g, dtype=f64) * 2, dim=-1)
    lp_model = torch.log_softmax(torch.randn(20, 6, generator=g, dtype=f64), dim=-1)
    exact = (-(lp_opt.exp() * lp_model).sum(-1) + (lp_opt.exp() * lp_opt).sum(-1)).sum()
    assert float(sigma_excess(lp_model, lp_opt)) == pytest.approx(float(exact), rel=1e-12)
    draws = 20000
    y = torch.multinomial(lp_opt.exp(), draws, replacement=True, generator=g)  # [20, draws]
    diff = (-lp_model.gather(1, y) + lp_opt.gather(1, y)).sum(dim=0)  # per draw, Σ over queries
    mean, se = float(diff.mean()), float(diff.std() / math.sqrt(draws))
    assert abs(mean - float(exact)) < 4 * se
    assert se < 0.05 * float(exact)  # the check has power


def test_zero_probabilities():
    lm = torch.tensor([[0.0, float("-inf")]], dtype=f64)  # model puts all mass on class 0
    lo = _lp([[0.25, 0.75]])
    assert float(sigma(lm, lo)) == pytest.approx(math.log(4), rel=1e-14)
    assert math.isinf(float(sigma_excess(lm, lo)))


def test_validation():
    lp = torch.log_softmax(torch.randn(4, 3, dtype=f64), dim=-1)
    with pytest.raises(ValueError, match="same shape"):
        sigma(lp, lp[:, :2].log_softmax(-1))
    with pytest.raises(ValueError, match="log_p_model rows are not normalised"):
        sigma(lp + 1, lp)
    with pytest.raises(ValueError, match="log_p_opt contains nan"):
        sigma(lp, torch.full_like(lp, float("nan")))
    with pytest.raises(ValueError, match="N >= 2"):
        sigma(torch.zeros(3, 1, dtype=f64), torch.zeros(3, 1, dtype=f64))
    with pytest.raises(ValueError, match="shape"):
        sigma(lp[0], lp[0])


def test_sigma_from_logits_matches_the_log_probability_path():
    g = torch.Generator().manual_seed(3)
    a, b = (
        torch.randn(4, 6, 5, generator=g, dtype=f64) * 3,
        torch.randn(4, 6, 5, generator=g, dtype=f64),
    )
    la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    assert float(sigma_from_logits(a, b)) == pytest.approx(float(sigma(la, lb)), rel=1e-12)
    assert float(sigma_from_logits(a, b, excess=True)) == pytest.approx(
        float(sigma_excess(la, lb)), rel=1e-12
    )
    a[0, 0, 1] = float("-inf")  # a class the model rules out contributes 0 to KL(model ‖ opt)
    assert torch.isfinite(sigma_from_logits(a, b))
    assert float(sigma_from_logits(a, b)) == pytest.approx(
        float(sigma(torch.log_softmax(a, -1), lb)), rel=1e-12
    )
    with pytest.raises(ValueError, match="same shape"):
        sigma_from_logits(a, b[:, :, :4])
