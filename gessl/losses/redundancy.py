"""Redundancy-reduction losses on batch statistics: Barlow Twins and VICReg.

Conventions (they differ between the two papers' code): Barlow Twins standardises each
feature with the *biased* batch variance (BatchNorm without affine); VICReg uses the *unbiased*
variance and divides its covariance by N − 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gessl.losses._base import LossOutput, check_embeddings, check_positive, register_loss

__all__ = ["barlow_twins", "off_diagonal", "vicreg"]


def _offdiag_sq_sum(m: Tensor) -> Tensor:
    """``Σ_{i≠j} m_ij²`` without boolean indexing (works under ``torch.func.vmap``)."""
    return m.pow(2).sum() - torch.diagonal(m).pow(2).sum()


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, flattened (mask-based, any size)."""
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"off_diagonal needs a square matrix, got {tuple(m.shape)}")
    mask = ~torch.eye(m.shape[0], dtype=torch.bool, device=m.device)
    return m[mask]


@register_loss("barlow_twins")
def barlow_twins(
    z1: Tensor,
    z2: Tensor,
    lambda_offdiag: float = 5e-3,
    scale: float = 1.0,
    eps: float = 1e-5,
    check_rank: bool = False,
    batchnorm: bool = True,
) -> LossOutput:
    """Barlow Twins (Zbontar et al. 2021, arXiv 2103.03230, eqs. 1–2).

    ``C = BN(z1)ᵀ BN(z2) / N`` with per-feature standardisation (biased variance + ``eps``, no
    affine), ``L = scale · [Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²]``.

    Args:
        lambda_offdiag: λ. Paper value 5e-3; the official code (facebookresearch/barlowtwins,
            ``--lambd``) uses 0.0051 — pass that to match it.
        scale: overall multiplier. Paper: 1. Early official code had ``--scale-loss 0.024``; the
            authors later advised ``196 / projector_dim`` for small-scale runs (barlowtwins#9).
        eps: added to the variance in BN (PyTorch BatchNorm's default 1e-5). With ``eps = 0`` the
            loss is exactly invariant to per-feature positive affine maps of each view.
        check_rank: raise ``ValueError`` if ``D >= N``: BN centres the columns, so rank(C) ≤ N − 1
            and ``C = I`` (loss 0) is then unreachable.
        batchnorm: standardise features (the method). ``False`` uses the raw cross-correlation
            ``C = z1ᵀz2/N``, the linearised model of Simon et al. 2023 (arXiv 2303.15438), whose
            loss with ``lambda_offdiag=1`` is ``‖C − I‖²_F``.

    Terms: ``on_diagonal`` = Σ(1 − C_ii)², ``off_diagonal`` = Σ_{i≠j} C_ij² (both unscaled).
    Collapse (all equal, eps > 0): C = 0, so L = scale · D.
    """
    check_embeddings(z1, z2)
    check_positive("lambda_offdiag", lambda_offdiag, allow_zero=True)
    check_positive("scale", scale)
    check_positive("eps", eps, allow_zero=True)
    n, d = z1.shape
    if check_rank and d >= n:
        raise ValueError(
            f"z1 has D={d} >= N={n}: Barlow Twins cannot reach C = I (rank(C) <= N-1); "
            "use a larger batch or a smaller projector"
        )

    def bn(z: Tensor) -> Tensor:
        zc = z - z.mean(dim=0)
        return zc / torch.sqrt(zc.pow(2).mean(dim=0) + eps)

    c = (bn(z1).T @ bn(z2) if batchnorm else z1.T @ z2) / n
    on = (1 - torch.diagonal(c)).pow(2).sum()
    off = _offdiag_sq_sum(c)
    return LossOutput(scale * (on + lambda_offdiag * off), {"on_diagonal": on, "off_diagonal": off})


def _variance_term(z: Tensor, gamma: float, eps: float) -> Tensor:
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return torch.relu(gamma - std).mean()


def _covariance_term(z: Tensor) -> Tensor:
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / (n - 1)
    return _offdiag_sq_sum(cov) / d


@register_loss("vicreg")
def vicreg(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    variance_halving: bool = False,
    check_rank: bool = False,
) -> LossOutput:
    """VICReg (Bardes, Ponce & LeCun 2022, arXiv 2105.04906, eqs. 1–6).

    ``s = mean((z1 − z2)²)``; ``v(Z) = mean_j relu(γ − sqrt(Var_j(Z) + ε))`` (unbiased variance);
    ``c(Z) = (1/D) Σ_{i≠j} Cov(Z)_ij²`` with ``Cov = Z̄ᵀZ̄/(N−1)``;
    ``L = λ s + μ [v(z1) + v(z2)] + ν [c(z1) + c(z2)]`` (paper, eq. 6).

    Args:
        sim_weight, var_weight, cov_weight: λ, μ, ν; paper defaults 25, 25, 1.
        gamma, eps: γ = 1 and ε = 1e-4 (paper).
        variance_halving: the official code (facebookresearch/vicreg, ``main_vicreg.py``) divides
            each view's variance term by 2, i.e. uses ``μ [v(z1) + v(z2)] / 2``; ``True`` matches
            it (vicreg#8). Default ``False`` follows the paper.
        check_rank: raise ``ValueError`` if ``D > N − 1``: a full-rank diagonal covariance, hence
            L = 0, is then impossible (the centred batch has rank ≤ N − 1).

    Terms: ``invariance`` s, ``variance`` v(z1) + v(z2) (halved if ``variance_halving``),
    ``covariance`` c(z1) + c(z2) — all unweighted.
    """
    check_embeddings(z1, z2)
    for name, val in (
        ("sim_weight", sim_weight),
        ("var_weight", var_weight),
        ("cov_weight", cov_weight),
        ("eps", eps),
    ):
        check_positive(name, val, allow_zero=True)
    check_positive("gamma", gamma)
    n, d = z1.shape
    if check_rank and d > n - 1:
        raise ValueError(
            f"z1 has D={d} > N-1={n - 1}: VICReg cannot reach zero loss; use a larger batch"
        )
    inv = (z1 - z2).pow(2).mean()
    var = _variance_term(z1, gamma, eps) + _variance_term(z2, gamma, eps)
    if variance_halving:
        var = var / 2
    cov = _covariance_term(z1) + _covariance_term(z2)
    loss = sim_weight * inv + var_weight * var + cov_weight * cov
    return LossOutput(loss, {"invariance": inv, "variance": var, "covariance": cov})
