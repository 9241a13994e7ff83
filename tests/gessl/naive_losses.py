"""Deliberately fragile losses for the harness tests, importable as ``tests.gessl.naive_losses``
so that the real command (``python -m gessl.testing tests.gessl.naive_losses:naive_infonce``)
can load them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def naive_infonce(z1: Tensor, z2: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE with ``exp`` before the ratio, ``-log(exp(s_ii/τ) / Σ_j exp(s_ij/τ))``, cosine.

    Exact in float64 at every τ the tests use, but ``exp(1/τ)`` overflows float32 (max ≈ e^88.7)
    once a cosine exceeds ``88.7 τ`` — at τ = 0.01 an aligned pair gives ``exp(100) = inf``.
    """
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    sim = torch.exp(z1 @ z2.T / temperature)
    return -torch.log(torch.diagonal(sim) / sim.sum(dim=1)).mean()


def naive_distance(z1: Tensor, z2: Tensor) -> Tensor:
    """Mean Euclidean distance of positive pairs, as ``sqrt(Σ (z1 − z2)²)``. Its value is finite
    everywhere, but at ``z1_i = z2_i`` (aligned positives) the gradient of the square root is
    ``inf · 0 = NaN``, in any dtype (``torch.linalg.vector_norm`` would define it as 0)."""
    return (z1 - z2).pow(2).sum(dim=1).sqrt().mean()


def dtype_recorder(seen: list[torch.dtype]):
    """A loss (cosine alignment) that appends the dtype of every call's inputs to ``seen``."""

    def loss(z1: Tensor, z2: Tensor) -> Tensor:
        seen.append(z1.dtype)
        return -(F.normalize(z1, dim=1) * F.normalize(z2, dim=1)).sum(dim=1).mean()

    return loss


def broken_reference(z1, z2, **options) -> float:
    """A card's reference that raises: the card is wrong, not the loss under test."""
    raise RuntimeError("broken reference")
