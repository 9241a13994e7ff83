"""Setting A7: the uniform distribution on the sphere, alignment/uniformity and the InfoNCE
large-M limit (Wang & Isola, ICML 2020, arXiv 2005.10242; closed forms docs/settings.md §8 [R])."""

from __future__ import annotations

import math

import torch
from scipy.special import gammaln, ive
from torch import Tensor

__all__ = ["log_mean_exp_dot_uniform", "sample_sphere", "uniformity_closed_form"]


def log_mean_exp_dot_uniform(kappa: float, d: int) -> float:
    """``log E_{v ~ Unif(S^{d−1})} exp(κ uᵀv) = log[Γ(d/2) (2/κ)^{d/2−1} I_{d/2−1}(κ)]``.

    (For d = 3 this is ``log(sinh κ / κ)``.) Uses the exponentially scaled Bessel function.
    """
    nu = d / 2 - 1
    return float(gammaln(d / 2) + nu * math.log(2 / kappa) + math.log(ive(nu, kappa)) + kappa)


def uniformity_closed_form(t: float, d: int) -> float:
    """``L_uniform`` of the uniform distribution on S^{d−1}:
    ``−2t + log(Γ(d/2) t^{1−d/2} I_{d/2−1}(2t))``, since ``‖x − y‖² = 2 − 2xᵀy``."""
    return -2 * t + log_mean_exp_dot_uniform(2 * t, d)


def sample_sphere(gen: torch.Generator, n: int, d: int) -> Tensor:
    """``[n, d]`` float64 points uniform on the unit sphere."""
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z / z.norm(dim=1, keepdim=True)
