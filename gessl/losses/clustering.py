"""Clustering / self-distillation losses over prototypes: SwAV and DINO."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gessl.losses._base import (
    LossOutput,
    check_embeddings,
    check_extra,
    check_positive,
    register_loss,
    value_checks_enabled,
)

__all__ = ["dino", "dino_center_update", "sinkhorn_knopp", "swav"]


def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Equipartitioned soft codes from ``[B, K]`` prototype scores (Cuturi 2013; SwAV Alg. 1).

    Returns ``Q`` of shape ``[B, K]`` whose rows sum to 1 (a code per sample): the matrix
    ``exp(scores/ε)`` is alternately rescaled so each prototype receives total mass 1/K and each
    sample 1/B, then rows are renormalised. Computed in the log domain, so small ``ε`` does not
    overflow. Equivariant to permutations of the samples and of the prototypes.
    """
    check_positive("epsilon", epsilon)
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    b, k = scores.shape
    log_q = scores / epsilon
    for _ in range(iterations):
        # each prototype (column) gets mass 1/K, then each sample (row) gets mass 1/B
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(b)
    return torch.exp(log_q + math.log(b))


@register_loss("swav")
def swav(
    z1: Tensor,
    z2: Tensor,
    prototypes: Tensor | None = None,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    queue: Tensor | None = None,
) -> LossOutput:
    """SwAV's swapped prediction (Caron et al. 2020, arXiv 2006.09882, eqs. 1–3).

    Scores ``s = z̄ Cᵀ`` between L2-normalised embeddings and L2-normalised prototypes ``C``;
    codes ``q = SinkhornKnopp(s / ε)`` (no gradient); predictions ``p = softmax(s / τ)``;
    ``L = ½ [CE(q2, p1) + CE(q1, p2)]`` averaged over the batch.

    Args:
        prototypes: ``[K, D]`` prototype vectors (required; a learnable parameter of the method).
        temperature: τ = 0.1; epsilon: ε = 0.05; sinkhorn_iterations: 3 (paper defaults).
        queue: optional ``[Q, D]`` earlier embeddings whose scores join the Sinkhorn problem (the
            paper's small-batch queue); only the batch's own codes are used in the loss.

    Terms: ``z1_predicts_z2``, ``z2_predicts_z1`` (the two cross-entropies).
    """
    check_embeddings(z1, z2)
    if prototypes is None:
        raise ValueError("swav needs prototypes= ([K, D] tensor)")
    check_extra(prototypes, "prototypes", z1.shape[1], z1, rows_min=2)
    check_positive("temperature", temperature)
    check_positive("epsilon", epsilon)
    c = F.normalize(prototypes, dim=1)
    s1 = F.normalize(z1, dim=1) @ c.T
    s2 = F.normalize(z2, dim=1) @ c.T

    def codes(s: Tensor) -> Tensor:
        with torch.no_grad():
            if queue is None:
                return sinkhorn_knopp(s.detach(), epsilon, sinkhorn_iterations)
            check_extra(queue, "queue", z1.shape[1], z1)
            sq = F.normalize(queue, dim=1) @ c.T
            q = sinkhorn_knopp(torch.cat([s.detach(), sq.detach()]), epsilon, sinkhorn_iterations)
            return q[: s.shape[0]]

    q1, q2 = codes(s1), codes(s2)
    ce12 = -(q2 * torch.log_softmax(s1 / temperature, dim=1)).sum(dim=1).mean()
    ce21 = -(q1 * torch.log_softmax(s2 / temperature, dim=1)).sum(dim=1).mean()
    return LossOutput((ce12 + ce21) / 2, {"z1_predicts_z2": ce12, "z2_predicts_z1": ce21})


@register_loss("dino")
def dino(
    z1: Tensor,
    z2: Tensor,
    center: Tensor | None = None,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> LossOutput:
    """DINO's self-distillation cross-entropy (Caron et al. 2021, arXiv 2104.14294, eq. 1).

    ``z1``: student head outputs ``[N, K]``; ``z2``: teacher head outputs ``[N, K]`` (detached).
    ``P_t = softmax((z2 − c) / τ_t)`` (centering and sharpening), ``L = −mean_i Σ_k P_t log
    softmax(z1/τ_s)``. Which student crop meets which teacher crop is the method's business.

    Args:
        center: ``[K]`` running mean of teacher outputs (default zeros); update it with
            :func:`dino_center_update` once per step.
        student_temperature: τ_s = 0.1; teacher_temperature: τ_t = 0.04 (paper defaults; the
            official code warms τ_t up from 0.04 to 0.07 — a schedule, kept in the method).

    Terms: ``teacher_entropy`` (mean entropy of P_t, detached; low = sharp, log K = uniform).
    """
    check_embeddings(z1, z2, names=("z1 (student)", "z2 (teacher)"))
    check_positive("student_temperature", student_temperature)
    check_positive("teacher_temperature", teacher_temperature)
    k = z1.shape[1]
    if center is None:
        center = torch.zeros(k, dtype=z1.dtype, device=z1.device)
    if not isinstance(center, Tensor) or center.shape != (k,):
        raise ValueError(
            f"center must be a tensor of shape [{k}], got {getattr(center, 'shape', center)}"
        )
    if value_checks_enabled() and not bool(torch.isfinite(center).all()):
        raise ValueError("center contains non-finite values")
    log_pt = torch.log_softmax((z2.detach() - center.detach()) / teacher_temperature, dim=1)
    log_ps = torch.log_softmax(z1 / student_temperature, dim=1)
    pt = log_pt.exp()
    loss = -(pt * log_ps).sum(dim=1).mean()
    entropy = -(pt * log_pt).sum(dim=1).mean().detach()
    return LossOutput(loss, {"teacher_entropy": entropy})


def dino_center_update(center: Tensor, teacher: Tensor, momentum: float = 0.9) -> Tensor:
    """New DINO center ``m·c + (1 − m)·mean(teacher)`` (paper eq. 4; m = 0.9)."""
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    return momentum * center + (1 - momentum) * teacher.detach().mean(dim=0)
