"""float32 stability at small temperature, and clear errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gessl.losses import available_losses, get_loss
from gessl.testing import references


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


@pytest.mark.parametrize("name", ["infonce", "nt_xent", "moco"])
def test_float32_stable_at_inverse_temperature_100(name):
    """1/τ = 100 with unit vectors: logits up to 100, e^100 overflows float32 (max ≈ e^88.7)."""
    assert math.exp(100) > float(torch.finfo(torch.float32).max)
    z1, z2 = _unit(32, 16, 0), _unit(32, 16, 1)
    z1.requires_grad_(True)
    out = get_loss(name)(z1, z2, temperature=0.01)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z1.grad).all()
    want = getattr(references, name)(
        z1.detach().double().numpy(), z2.double().numpy(), temperature=0.01
    )
    np.testing.assert_allclose(float(out.loss.detach()), want, rtol=2e-5)


def test_naive_exp_ratio_overflows_where_ours_does_not():
    """The failure our log-sum-exp form avoids (solo-learn/VISSL's exp-then-ratio pattern)."""
    z1, z2 = _unit(8, 4, 2), _unit(8, 4, 3)
    z2[0] = z1[0]  # a perfectly aligned positive: logit exactly 1/τ = 100
    sim = torch.exp(z1 @ z2.T / 0.01)
    naive = -torch.log(torch.diagonal(sim) / sim.sum(dim=1)).mean()
    assert not torch.isfinite(naive)
    assert torch.isfinite(get_loss("infonce")(z1, z2, temperature=0.01).loss)


def _inputs(name: str, n: int = 4, d: int = 3) -> tuple[torch.Tensor, torch.Tensor, dict]:
    z1, z2 = torch.randn(n, d), torch.randn(n, d)
    extra = {"prototypes": torch.randn(5, d)} if name == "swav" else {}
    return z1, z2, extra


@pytest.mark.parametrize("name", available_losses())
def test_bad_inputs_name_the_argument(name):
    fn = get_loss(name)
    z1, z2, extra = _inputs(name)
    with pytest.raises(ValueError, match="same shape"):
        fn(z1, z2[:, :2], **extra)
    with pytest.raises(ValueError, match="N >= 2"):
        fn(z1[:1], z2[:1], **extra)
    bad = z1.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"z1.*non-finite"):
        fn(bad, z2, **extra)
    bad = z2.clone()
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"z2.*non-finite"):
        fn(z1, bad, **extra)
    with pytest.raises(ValueError, match=r"z1.*shape \[N, D\]"):
        fn(z1[0], z2[0], **extra)
    with pytest.raises(ValueError, match="unknown option 'temprature'"):
        fn(z1, z2, temprature=0.1, **extra)


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("infonce", "temperature"),
        ("nt_xent", "temperature"),
        ("moco", "temperature"),
        ("swav", "temperature"),
        ("swav", "epsilon"),
        ("dino", "student_temperature"),
        ("dino", "teacher_temperature"),
        ("spectral", "mu"),
        ("barlow_twins", "scale"),
        ("vicreg", "gamma"),
    ],
)
@pytest.mark.parametrize("value", [0.0, -0.5, float("nan")])
def test_nonpositive_constants_rejected(name, option, value):
    z1, z2, extra = _inputs(name)
    with pytest.raises(ValueError, match=option):
        get_loss(name)(z1, z2, **extra, **{option: value})


def test_auxiliary_input_errors():
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="swav needs prototypes"):
        get_loss("swav")(z1, z2)
    with pytest.raises(ValueError, match="prototypes must have shape"):
        get_loss("swav")(z1, z2, prototypes=torch.randn(5, 4))
    with pytest.raises(ValueError, match="queue must have shape"):
        get_loss("moco")(z1, z2, queue=torch.randn(6, 2))
    with pytest.raises(ValueError, match="center must be a tensor of shape"):
        get_loss("dino")(z1, z2, center=torch.zeros(4))
    with pytest.raises(ValueError, match="critic must be one of"):
        get_loss("infonce")(z1, z2, critic="euclid")


def test_registry():
    assert available_losses() == sorted(
        [
            "barlow_twins",
            "byol",
            "dino",
            "infonce",
            "moco",
            "nt_xent",
            "simsiam",
            "spectral",
            "swav",
            "vicreg",
        ]
    )
    with pytest.raises(ValueError, match="unknown loss 'simclr'"):
        get_loss("simclr")


@pytest.mark.parametrize("name", available_losses())
def test_output_contract_and_dtype_agnostic(name):
    z1, z2, extra = _inputs(name)
    for dtype in (torch.float32, torch.float64):
        out = get_loss(name)(
            z1.to(dtype), z2.to(dtype), **{k: v.to(dtype) for k, v in extra.items()}
        )
        assert out.loss.dim() == 0 and out.loss.dtype == dtype
        assert out.terms and all(v.dim() == 0 for v in out.terms.values())
        assert set(out.detached()) == {"loss", *out.terms}
