"""HaoChen et al.'s spectral contrastive loss (NeurIPS 2021, arXiv 2106.04156)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gessl.losses._base import LossOutput, check_embeddings, check_positive, register_loss

__all__ = ["project_to_ball", "spectral"]


def project_to_ball(z: Tensor, radius: float) -> Tensor:
    """Rows with norm > ``radius`` scaled onto the sphere of that radius; others unchanged."""
    norms = z.norm(dim=1, keepdim=True)
    factor = torch.clamp(radius / torch.clamp(norms, min=torch.finfo(z.dtype).tiny), max=1.0)
    return z * factor


@register_loss("spectral")
def spectral(z1: Tensor, z2: Tensor, mu: float = 1.0, projection: bool = False) -> LossOutput:
    """Spectral contrastive loss, the unbiased batch form of HaoChen et al. 2021 (eq. 6, §4).

    ``L̂ = −(2/B) Σ_i z1_iᵀ z2_i + (1/(B(B−1))) Σ_{i≠j} (z1_iᵀ z2_j)²``, whose expectation over
    batches is the population loss ``−2 E[f(x)ᵀf(x⁺)] + E[(f(x)ᵀf(x'))²]`` (pairs ``i = j`` are
    excluded: including them adds the squared norms ``(z1_iᵀz2_i)²`` and biases it).

    Args:
        mu: μ > 0, used only with ``projection``.
        projection: the authors' code (jhaochenz96/spectral_contrastive_learning,
            ``models/spectral.py``) first projects each row onto the ball of radius √μ and then
            divides the loss by μ; not in the paper. With it the loss is ≥ −2; without it, it is
            unbounded below once D ≥ B (the repulsion term can then be driven to 0 while the
            attraction grows). Default ``False`` (paper).

    Terms: ``attraction`` = −(2/B) Σ z1_iᵀz2_i, ``repulsion`` = the mean squared off-diagonal
    cross-view inner product (before the division by μ).
    Collapse to ``v``: ``−2‖v‖² + ‖v‖⁴`` (without projection).
    """
    check_embeddings(z1, z2)
    check_positive("mu", mu)
    if projection:
        z1 = project_to_ball(z1, math.sqrt(mu))
        z2 = project_to_ball(z2, math.sqrt(mu))
    b = z1.shape[0]
    attraction = -2 * (z1 * z2).sum(dim=1).mean()
    sq = (z1 @ z2.T).pow(2)
    repulsion = (sq.sum() - torch.diagonal(sq).sum()) / (b * (b - 1))
    loss = attraction + repulsion
    if projection:
        loss = loss / mu
    return LossOutput(loss, {"attraction": attraction, "repulsion": repulsion})
