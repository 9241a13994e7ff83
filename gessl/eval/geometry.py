"""Alignment and uniformity on the hypersphere (Wang & Isola, ICML 2020, arXiv 2005.10242).

``L_align(f; α) = E_{(x,y)~p_pos} ‖f(x) − f(y)‖₂^α`` and
``L_uniform(f; t) = log E_{x,y~p_data} exp(−t‖f(x) − f(y)‖²)``, estimated on a batch; the
uniformity estimate averages over distinct pairs (a U-statistic inside the log).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["alignment", "uniformity"]


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """Mean ``‖z1_i − z2_i‖^α`` over positive pairs (rows), α > 0 (paper default 2)."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"z1 and z2 must be [N, D] of the same shape, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return (z1 - z2).norm(dim=1).pow(alpha).mean()


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """``log`` of the mean of ``exp(−t‖z_i − z_j‖²)`` over pairs ``i < j`` (paper default t = 2).

    Computed as a log-sum-exp, so it is finite even when every pair is far apart.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"z must be [N, D] with N >= 2, got {tuple(z.shape)}")
    if t <= 0:
        raise ValueError(f"t must be > 0, got {t}")
    sq = torch.pdist(z, p=2).pow(2)
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())
