"""Every built-in loss equals its independent float64 NumPy reference (gessl.testing.references)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gessl.losses import get_loss
from gessl.testing import references

# (loss, options, extra inputs as (name, rows)) — each official-code deviation is covered too.
CASES = [
    ("infonce", {}, ()),
    ("infonce", {"temperature": 0.5, "critic": "dot"}, ()),
    ("infonce", {"temperature": 0.7, "critic": "neg_sq_distance"}, ()),
    ("infonce", {"temperature": 1.3, "critic": "two_headed", "symmetric": True}, ()),
    ("infonce", {"temperature": 0.2, "symmetric": True}, ()),
    ("nt_xent", {}, ()),
    ("nt_xent", {"temperature": 0.1}, ()),
    ("moco", {}, (("queue", 7),)),
    ("moco", {"temperature": 0.07}, ()),
    ("byol", {}, ()),
    ("simsiam", {}, ()),
    ("barlow_twins", {}, ()),
    ("barlow_twins", {"lambda_offdiag": 0.0051, "scale": 0.024, "eps": 0.0}, ()),
    ("barlow_twins", {"lambda_offdiag": 1.0, "batchnorm": False}, ()),
    ("vicreg", {}, ()),
    ("vicreg", {"variance_halving": True, "gamma": 2.0}, ()),
    ("spectral", {}, ()),
    ("spectral", {"projection": True, "mu": 0.5}, ()),
    ("swav", {}, (("prototypes", 6),)),
    ("swav", {"epsilon": 0.1, "sinkhorn_iterations": 5}, (("prototypes", 4), ("queue", 5))),
    ("dino", {}, (("center", 0),)),
    ("dino", {"student_temperature": 0.2, "teacher_temperature": 0.07}, ()),
]


@pytest.mark.parametrize(("name", "options", "extras"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(name, options, extras, seed):
    rng = np.random.default_rng(seed)
    n, d = 5 + seed, 3 + seed
    if options.get("critic") == "two_headed":
        d += d % 2  # two heads of equal size
    x = {"z1": rng.standard_normal((n, d)), "z2": rng.standard_normal((n, d))}
    for extra, rows in extras:
        x[extra] = rng.standard_normal(d) if rows == 0 else rng.standard_normal((rows, d))
    t = {k: torch.tensor(v) for k, v in x.items()}
    got = get_loss(name)(t.pop("z1"), t.pop("z2"), **t, **options).loss
    want = getattr(references, name)(x.pop("z1"), x.pop("z2"), **x, **options)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(float(got), want, rtol=1e-10, atol=1e-12)


def test_references_disagree_across_losses():
    """The comparison above can fail: references of different losses give different values."""
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    assert abs(references.infonce(z1, z2, temperature=0.5) - references.nt_xent(z1, z2)) > 1e-3
    assert abs(references.byol(z1, z2) - 2 * (1 + references.simsiam(z1, z2))) < 1e-12
