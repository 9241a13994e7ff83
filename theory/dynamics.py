"""Setting A6: linearised Barlow Twins learns eigendirections one at a time.

Simon, Knutins, Ziyin, Geisz, Fetterman & Albrecht, "On the Stepwise Nature of Self-Supervised
Learning", ICML 2023 (arXiv 2303.15438) [S, blog]. For ``f(x) = Wx`` and the loss
``L(W) = ‖WΓWᵀ − I‖²_F`` (Barlow Twins with λ = 1 and no batch norm; Γ the symmetric PSD feature
cross-correlation with eigenpairs ``(γ_j, u_j)``), gradient flow ``Ẇ = −∇L = −4(C − I)WΓ`` from
the aligned start ``W(0) = diag(√(c_j(0)/γ_j)) U_mᵀ`` keeps ``C = WΓWᵀ`` diagonal and
(docs/settings.md §7 [R, verified])::

    ċ_j = 8 γ_j c_j (1 − c_j)   ⇒   c_j(t) = c₀ e^{8γ_j t} / (1 − c₀ + c₀ e^{8γ_j t}),
    half-time t_j = ln((1 − c₀)/c₀) / (8 γ_j).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["design_with_correlation", "half_time", "logistic_trajectory"]


def logistic_trajectory(t: np.ndarray, gamma: float, c0: float) -> np.ndarray:
    """``c_j(t)`` of the aligned gradient flow."""
    e = np.exp(8 * gamma * t)
    return c0 * e / (1 - c0 + c0 * e)


def half_time(gamma: float, c0: float) -> float:
    """Time at which ``c_j`` reaches 1/2."""
    return math.log((1 - c0) / c0) / (8 * gamma)


def design_with_correlation(gammas: np.ndarray, rotation: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """A batch ``X`` (``[d, d]`` float64) with ``XᵀX/N = Γ = U diag(γ) Uᵀ`` exactly (N = d), so the
    batch loss on embeddings ``Z = XWᵀ`` of both views equals the population ``‖WΓWᵀ − I‖²``."""
    d = len(gammas)
    gamma = rotation @ np.diag(gammas) @ rotation.T
    x = math.sqrt(d) * rotation @ np.diag(np.sqrt(gammas)) @ rotation.T
    return torch.from_numpy(x), gamma
