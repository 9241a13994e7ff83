"""gessl.sigma: the checks and reductions that mutation testing showed were unpinned.

Each test asserts a number (a value, a shape, a boundary) or an exact message that a one-token
change of :mod:`gessl.sigma` would get wrong (``docs/testing.md``).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from gessl.sigma import kl_rows, sigma, sigma_excess, sigma_from_logits

f64 = torch.float64


def _lsm(*shape: int, seed: int = 0, dtype=f64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(*shape, generator=g, dtype=f64), dim=-1).to(dtype)


def _full(msg: str) -> str:
    """A regex matching exactly ``msg``."""
    return "^" + re.escape(msg) + "$"


def test_kl_rows_reduces_the_last_dim_only_of_a_3d_batch():
    a, b = _lsm(2, 3, 4, seed=1), _lsm(2, 3, 4, seed=2)
    out = kl_rows(a, b)
    assert out.shape == (2, 3)
    expected = (a.exp() * (a - b)).sum(-1)
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=0)
    # KL((.5,.5) ‖ (.9,.1)) = 0.510826 (hand value of tests/gessl/test_sigma.py)
    p = torch.tensor([[0.5, 0.5]], dtype=f64).log()
    q = torch.tensor([[0.9, 0.1]], dtype=f64).log()
    assert float(kl_rows(p, q)[0]) == pytest.approx(0.5108256237659907, rel=1e-14)


def test_non_float_input_is_refused_by_name():
    ints = torch.zeros(3, 2, dtype=torch.long)
    for f in (sigma, sigma_excess):
        with pytest.raises(
            ValueError,
            match=_full("log_p_model must be a floating-point tensor of log-probabilities"),
        ):
            f(ints, ints)


def test_one_class_and_one_query_boundaries():
    # N = 1 is refused, naming N
    one_class = torch.zeros(2, 3, 1, dtype=f64)
    with pytest.raises(ValueError, match=_full("log_p_model has N=1 classes; a task needs N >= 2")):
        sigma(one_class, one_class)
    # one query per task (shape[1] == 1) is fine: the N check reads the last dim
    a, b = _lsm(2, 1, 3, seed=3), _lsm(2, 1, 3, seed=4)
    expected = float(kl_rows(a, b).sum(-1).mean())
    assert float(sigma(a, b)) == pytest.approx(expected, rel=1e-14)
    # two classes and many queries: [tasks=1, queries=3, N=1] still names N=1
    with pytest.raises(ValueError, match=r"has N=1 classes"):
        sigma(torch.zeros(1, 3, 1, dtype=f64), torch.zeros(1, 3, 1, dtype=f64))


def test_plus_inf_is_refused_as_such():
    lp = torch.tensor([[0.0, float("inf")]], dtype=f64)
    with pytest.raises(ValueError, match=_full("log_p_opt contains nan or +inf")):
        sigma(_lsm(1, 2), lp)


def test_float64_normalisation_tolerance_is_1e_9_and_inclusive():
    # logsumexp([1e-9, -800]) == 1e-9 exactly in float64 (exp(-800) underflows): accepted
    edge = torch.tensor([[1e-9, -800.0]], dtype=f64)
    assert float(torch.logsumexp(edge, -1)) == 1e-9
    assert float(sigma(edge, edge)) == 0.0
    # 1e-6 off is far inside float32's 1e-4 but outside float64's 1e-9: refused, message exact
    off = torch.tensor([[math.log(0.5) + 1e-6, math.log(0.5) + 1e-6]], dtype=f64)
    with pytest.raises(ValueError) as err:
        sigma(off, off)
    assert re.fullmatch(
        r"log_p_model rows are not normalised log-probabilities \(max \|logsumexp\| = 1e-06\); "
        r"pass log_softmax\(logits\), or use sigma_from_logits",
        str(err.value),
    )
    # the same offset in float32 is accepted
    assert float(sigma(off.float(), off.float())) == pytest.approx(0.0, abs=1e-6)


def test_validate_false_still_checks_shapes_and_skips_the_rest():
    a, b = _lsm(4, 3, seed=5), _lsm(4, 3, seed=6)
    for f, (p, q) in ((sigma, (a, b)), (sigma_excess, (b, a))):
        assert float(f(a, b, validate=False)) == pytest.approx(float(kl_rows(p, q).sum()), 1e-14)
        with pytest.raises(
            ValueError, match=_full("log_p_model and log_p_opt must have the same shape")
        ):
            f(a, b[:2], validate=False)
    # unnormalised rows: refused by default, computed as given with validate=False
    un = a + 1.0
    for f in (sigma, sigma_excess):
        with pytest.raises(ValueError, match="not normalised"):
            f(un, un)
    # exact value of the unvalidated sum: Σ exp(a+1)·1 over 4 rows = 4e (rows of exp(a) sum to 1)
    assert float(sigma(un, a, validate=False)) == pytest.approx(4 * math.e, rel=1e-12)
    assert float(sigma_excess(a, un, validate=False)) == pytest.approx(4 * math.e, rel=1e-12)


def test_sigma_from_logits_shapes():
    g = torch.Generator().manual_seed(7)
    # 2-D input, one query, and N = 2 are all valid
    for shape in ((5, 2), (1, 3), (2, 1, 3), (3, 4, 2)):
        a = torch.randn(*shape, generator=g, dtype=f64)
        b = torch.randn(*shape, generator=g, dtype=f64)
        la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        assert float(sigma_from_logits(a, b)) == pytest.approx(float(sigma(la, lb)), rel=1e-12)
        assert float(sigma_from_logits(a, b, excess=True)) == pytest.approx(
            float(sigma_excess(la, lb)), rel=1e-12
        )
    # 4-D input (N >= 2) and N = 1 are refused, the message naming the shape
    for shape in ((2, 2, 3, 4), (3, 1)):
        z = torch.zeros(*shape, dtype=f64)
        with pytest.raises(
            ValueError,
            match=_full(
                f"logits must be [queries, N] or [tasks, queries, N] with N >= 2, got {shape}"
            ),
        ):
            sigma_from_logits(z, z)
