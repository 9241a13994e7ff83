"""The harness catches what is false: wrong cards for correct losses, and buggy losses."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gessl.losses import builtin_card_path, get_loss
from gessl.testing import PropertyCard, check_loss, load_card


def _card(name: str, **changes) -> PropertyCard:
    return dataclasses.replace(load_card(builtin_card_path(name)), **changes)


# (loss, card changes, the property that must fail) — each a property the loss does not have
WRONG = [
    ("vicreg", {"properties": ("rotation",)}, "rotation"),
    ("vicreg", {"properties": ("row_rescale",)}, "row_rescale"),
    ("barlow_twins", {"properties": ("rotation",)}, "rotation"),
    ("spectral", {"properties": ("row_rescale",)}, "row_rescale"),
    ("spectral", {"properties": ("translation",)}, "translation"),
    ("infonce", {"properties": ("view_swap",)}, "view_swap"),
    ("infonce", {"properties": ("feature_affine",)}, "feature_affine"),
    ("dino", {"properties": ("view_swap",)}, "view_swap"),
    ("swav", {"properties": ("gradcheck",), "differentiable": ("z1",)}, "gradcheck"),
    ("byol", {"properties": ("gradcheck",), "differentiable": ("z1", "z2")}, "gradcheck"),
    ("nt_xent", {"collapse": "log(N)"}, "collapse"),
    ("byol", {"collapse": "1"}, "collapse"),
    ("infonce", {"range": ("0", "log(N)")}, "range"),
    ("vicreg", {"collapse": "var_weight * (gamma - sqrt(eps))"}, "collapse"),  # official /2
    ("nt_xent", {"reference": "gessl.testing.references:infonce"}, "reference"),
]


@pytest.mark.parametrize(("name", "changes", "prop"), WRONG)
def test_wrong_card_is_reported(name, changes, prop):
    card = _card(name, **changes)
    report = check_loss(get_loss(name), card, properties=[prop], shrink=False)
    result = report[prop]
    assert result.status == "failed", report.format()
    assert not report.passed
    assert result.example and ("z1" in result.example or "v" in result.example)
    assert "falsifying example" in report.format()


def test_shrunk_example_is_small_and_replayable():
    card = _card("vicreg", properties=("rotation",))
    result = check_loss(get_loss("vicreg"), card)["rotation"]
    ex = result.example
    assert result.status == "failed" and ex["N"] == ex["z1"].shape[0]
    # replay the reported example: the property really fails on it
    f = get_loss("vicreg")
    z1, z2, q = (torch.tensor(ex[k]) for k in ("z1", "z2", "Q"))
    before = float(f(z1, z2, **ex["options"]).loss)
    after = float(f(z1 @ q, z2 @ q, **ex["options"]).loss)
    assert before == pytest.approx(ex["values"]["loss"], rel=1e-12)
    assert after == pytest.approx(ex["values"]["loss_transformed"], rel=1e-12)
    assert not math.isclose(before, after, rel_tol=1e-8)


# ---------------------------------------------------------------- buggy implementations


def naive_infonce(z1, z2, temperature=0.07):
    """exp-then-ratio InfoNCE (the solo-learn/VISSL pattern): overflows at small τ."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    sim = torch.exp(z1 @ z2.T / temperature)
    return -torch.log(torch.diagonal(sim) / sim.sum(dim=1)).mean()


def ntxent_masked_with_zero(z1, z2, temperature=0.5):
    """NT-Xent whose self-similarity is masked with 0 instead of −inf (a spurious e^0 term)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool), 0.0)
    return F.cross_entropy(logits, (torch.arange(2 * n) + n) % (2 * n))


def spectral_with_diagonal(z1, z2, mu=1.0, projection=False):
    """Spectral loss whose repulsion includes the i = j pairs (biased)."""
    return -2 * (z1 * z2).sum(1).mean() + (z1 @ z2.T).pow(2).mean()


def test_naive_infonce_fails_finite_at_small_temperature():
    base = load_card(builtin_card_path("infonce"))
    card = dataclasses.replace(
        base, sweep={"temperature": (0.001, 0.004)}, properties=("finite",), options={}
    )
    assert not check_loss(naive_infonce, card, shrink=False).passed
    assert check_loss(get_loss("infonce"), card).passed  # ours holds on the same card


def test_zero_masked_ntxent_fails_collapse():
    card = load_card(builtin_card_path("nt_xent"))
    report = check_loss(
        ntxent_masked_with_zero, card, properties=["collapse", "reference"], shrink=False
    )
    assert report["collapse"].status == "failed"
    assert report["reference"].status == "failed"


def test_biased_spectral_fails_reference():
    card = load_card(builtin_card_path("spectral"))
    report = check_loss(
        spectral_with_diagonal, card, properties=["reference", "collapse"], shrink=False
    )
    assert report["reference"].status == "failed"
    # at collapse every pair has the same inner product, so the bias is invisible there:
    # only the reference comparison can catch this bug
    assert report["collapse"].status == "passed"


def test_plain_tensor_losses_are_accepted():
    card = _card(
        "infonce", properties=("finite", "rotation", "reference"), sweep={"temperature": (0.1, 1.0)}
    )

    def as_tensor(z1, z2, **kw):
        return get_loss("infonce")(z1, z2, **kw).loss

    assert check_loss(as_tensor, card).passed


def test_loss_that_raises_is_a_failure_with_its_message():
    def broken(z1, z2):
        raise RuntimeError("boom")

    card = PropertyCard(name="broken", properties=("finite",))
    result = check_loss(broken, card, shrink=False)["finite"]
    assert result.status == "failed" and "RuntimeError: boom" in result.message


def test_non_scalar_loss_fails_finite():
    card = PropertyCard(name="vector", properties=("finite",))
    result = check_loss(lambda z1, z2: (z1 * z2).sum(1), card, shrink=False)["finite"]
    assert result.status == "failed" and "0-dim" in result.message
