"""Closed-form values and bounds of the losses (see their docstrings), in float64."""

from __future__ import annotations

import math

import pytest
import torch

from gessl.losses import (
    barlow_twins,
    byol,
    infonce,
    moco,
    nt_xent,
    simsiam,
    sinkhorn_knopp,
    spectral,
    vicreg,
)

f64 = torch.float64


def _collapsed(n: int, d: int, seed: int = 0) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=f64)
    return v.expand(n, d).clone()


@pytest.mark.parametrize("n", [2, 5, 16])
def test_infonce_and_ntxent_collapse(n):
    z = _collapsed(n, 4)
    assert float(infonce(z, z).loss) == pytest.approx(math.log(n), rel=1e-14)
    assert float(infonce(z, z, critic="dot").loss) == pytest.approx(math.log(n), rel=1e-14)
    assert float(nt_xent(z, z).loss) == pytest.approx(math.log(2 * n - 1), rel=1e-14)
    queue = _collapsed(9, 4)
    assert float(moco(z, z, queue=queue).loss) == pytest.approx(math.log(10), rel=1e-14)


def test_infonce_large_temperature_tends_to_log_n():
    z1, z2 = torch.randn(8, 5, dtype=f64), torch.randn(8, 5, dtype=f64)
    assert float(infonce(z1, z2, temperature=1e6).loss) == pytest.approx(math.log(8), abs=1e-6)


def test_infonce_perfect_alignment_reaches_lower_bound():
    """The lower bound log(1+(N-1)e^{-2/τ}) is attained when each positive has cosine +1 and
    every negative −1: N = 2 antipodal points."""
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=f64)
    tau = 0.3
    want = math.log(1 + math.exp(-2 / tau))
    assert float(infonce(z, z, temperature=tau).loss) == pytest.approx(want, rel=1e-13)


def test_byol_simsiam_extremes():
    z = torch.randn(6, 3, dtype=f64)
    assert float(byol(z, z).loss) == pytest.approx(0.0, abs=1e-14)
    assert float(byol(z, -z).loss) == pytest.approx(4.0, rel=1e-14)
    assert float(simsiam(z, z).loss) == pytest.approx(-1.0, rel=1e-14)
    assert float(simsiam(z, -2 * z).loss) == pytest.approx(1.0, rel=1e-14)


def test_byol_and_simsiam_stop_gradient():
    p = torch.randn(4, 3, dtype=f64, requires_grad=True)
    z = torch.randn(4, 3, dtype=f64, requires_grad=True)
    byol(p, z).loss.backward()
    assert z.grad is None and p.grad is not None
    z2 = torch.randn(4, 3, dtype=f64, requires_grad=True)
    simsiam(p, z2, stop_gradient=False).loss.backward()
    assert z2.grad is not None


def _orthogonal_columns(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """[n, d] with centred, orthogonal columns, each of unbiased variance 1 (needs d <= n-1)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=f64)
    a = a - a.mean(dim=0)
    q, _ = torch.linalg.qr(a)
    return q * math.sqrt(n - 1)


def test_vicreg_zero_conditions():
    z = _orthogonal_columns(10, 4)
    out = vicreg(z, z)
    assert float(out.terms["invariance"]) == 0.0
    assert float(out.terms["variance"]) == 0.0  # std = sqrt(1 + eps) >= gamma = 1
    assert float(out.terms["covariance"]) == pytest.approx(0.0, abs=1e-24)
    assert float(out.loss) == pytest.approx(0.0, abs=1e-20)
    # each condition broken alone turns its own term on
    assert float(vicreg(z, z + 0.1).terms["invariance"]) == pytest.approx(0.01, rel=1e-12)
    assert float(vicreg(0.5 * z, 0.5 * z).terms["variance"]) > 0.9  # 2 * (1 - sqrt(.25+eps))
    mix = z.clone()
    mix[:, 1] = (z[:, 0] + z[:, 1]) / math.sqrt(2)
    assert float(vicreg(mix, mix).terms["covariance"]) > 0.1


def test_vicreg_collapse_and_halving():
    z = _collapsed(6, 3)
    out = vicreg(z, z)
    gap = 1.0 - math.sqrt(1e-4)
    assert float(out.terms["variance"]) == pytest.approx(2 * gap, rel=1e-12)
    assert float(out.loss) == pytest.approx(25 * 2 * gap, rel=1e-12)
    assert float(vicreg(z, z, variance_halving=True).loss) == pytest.approx(25 * gap, rel=1e-12)


def test_vicreg_rank_check():
    z = torch.randn(4, 4, dtype=f64)
    with pytest.raises(ValueError, match="D=4 > N-1=3"):
        vicreg(z, z, check_rank=True)
    vicreg(torch.randn(5, 4, dtype=f64), torch.randn(5, 4, dtype=f64), check_rank=True)


def test_barlow_collapse_and_identity():
    z = _collapsed(5, 3)
    assert float(barlow_twins(z, z).loss) == pytest.approx(3.0, rel=1e-14)
    w = _orthogonal_columns(9, 4)  # standardised columns orthogonal: C = I exactly
    out = barlow_twins(w, w, eps=0.0)
    assert float(out.loss) == pytest.approx(0.0, abs=1e-24)


@pytest.mark.parametrize(("n", "d"), [(3, 3), (4, 6), (5, 8)])
def test_barlow_identity_unreachable_when_d_ge_n(n, d):
    """BN centres the columns, so rank(C) <= N-1; with λ = 1 (L = ‖C − I‖²_F) Eckart–Young gives
    L >= D − N + 1 > 0 — on random inputs and after minimising L directly over the embeddings."""
    g = torch.Generator().manual_seed(n * d)
    for _ in range(20):
        a, b = torch.randn(n, d, dtype=f64, generator=g), torch.randn(n, d, dtype=f64, generator=g)
        assert float(barlow_twins(a, b, lambda_offdiag=1.0, eps=0.0).loss) >= d - n + 1 - 1e-9
    z1 = torch.randn(n, d, dtype=f64, generator=g, requires_grad=True)
    z2 = torch.randn(n, d, dtype=f64, generator=g, requires_grad=True)
    opt = torch.optim.Adam([z1, z2], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        barlow_twins(z1, z2, lambda_offdiag=1.0, eps=0.0).loss.backward()
        opt.step()
    final = float(barlow_twins(z1, z2, lambda_offdiag=1.0, eps=0.0).loss.detach())
    assert final >= d - n + 1 - 1e-9
    with pytest.raises(ValueError, match="cannot reach C = I"):
        barlow_twins(z1, z2, check_rank=True)


def test_barlow_reaches_zero_when_n_gt_d():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(12, 3, dtype=f64, generator=g, requires_grad=True)
    z2 = torch.randn(12, 3, dtype=f64, generator=g, requires_grad=True)
    opt = torch.optim.Adam([z1, z2], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        barlow_twins(z1, z2, lambda_offdiag=1.0, eps=0.0).loss.backward()
        opt.step()
    assert float(barlow_twins(z1, z2, lambda_offdiag=1.0, eps=0.0).loss.detach()) < 1e-3


def test_spectral_collapse_projection_and_unboundedness():
    z = _collapsed(7, 3, seed=3)
    r2 = float(z[0] @ z[0])
    assert float(spectral(z, z).loss) == pytest.approx(-2 * r2 + r2**2, rel=1e-13)
    # without projection: orthogonal positive pairs of growing norm drive the loss to -inf
    for c in (1.0, 10.0, 100.0):
        e = c * torch.eye(4, dtype=f64)
        assert float(spectral(e, e).loss) == pytest.approx(-2 * c**2, rel=1e-13)
    # with the official projection the loss is >= -2 whatever the inputs
    big = 50 * torch.randn(16, 20, dtype=f64)
    assert float(spectral(big, big, projection=True).loss) >= -2 - 1e-12
    assert float(spectral(big, big, projection=True, mu=4.0).loss) >= -2 - 1e-12


def test_sinkhorn_equipartition():
    s = torch.randn(8, 4, dtype=f64)
    q = sinkhorn_knopp(s, epsilon=0.5, iterations=200)
    assert torch.allclose(q.sum(dim=1), torch.ones(8, dtype=f64))
    assert torch.allclose(q.sum(dim=0), torch.full((4,), 2.0, dtype=f64), atol=1e-6)
    # log-domain: tiny epsilon does not overflow
    assert torch.isfinite(sinkhorn_knopp(s, epsilon=1e-4, iterations=3)).all()


def test_infonce_batched_over_tasks_is_the_mean_of_tasks():
    g = torch.Generator().manual_seed(5)
    z1, z2 = (
        torch.randn(3, 6, 4, generator=g, dtype=f64),
        torch.randn(3, 6, 4, generator=g, dtype=f64),
    )
    per_task = [float(infonce(z1[t], z2[t], temperature=0.3).loss) for t in range(3)]
    got = float(infonce(z1, z2, temperature=0.3).loss)
    assert got == pytest.approx(sum(per_task) / 3, rel=1e-13)
    sym = float(infonce(z1, z2, symmetric=True).loss)
    want = sum(float(infonce(z1[t], z2[t], symmetric=True).loss) for t in range(3)) / 3
    assert sym == pytest.approx(want, rel=1e-13)
