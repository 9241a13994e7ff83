"""Predictive (self-distillation) losses with a stop-gradient target: BYOL and SimSiam.

Both compare an online *prediction* ``z1`` with a target *projection* ``z2``; the target is
detached, so the gradient flows into ``z1`` only. The symmetrised version of each method
(swap the views, add the two losses) is composed by the method, not here.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gessl.losses._base import LossOutput, check_embeddings, register_loss

__all__ = ["byol", "simsiam"]


def _cosine_rows(p: Tensor, z: Tensor) -> Tensor:
    return (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)


@register_loss("byol")
def byol(z1: Tensor, z2: Tensor, stop_gradient: bool = True) -> LossOutput:
    """BYOL's normalised MSE (Grill et al. 2020, arXiv 2006.07733, eq. 2).

    ``ℓ_i = ‖p̄_i − z̄_i‖² = 2 − 2 cos(p_i, z_i)``, mean over the batch, with ``p = z1`` the online
    prediction and ``z = sg(z2)`` the target projection.

    Args:
        stop_gradient: detach the target (the method's definition; ``False`` only for analysis).

    Range [0, 4]; collapse (all equal) gives 0 — BYOL's loss alone cannot detect collapse.
    Terms: ``cosine`` (mean cosine similarity, detached).
    """
    check_embeddings(z1, z2, names=("z1 (prediction)", "z2 (target)"))
    target = z2.detach() if stop_gradient else z2
    cos = _cosine_rows(z1, target)
    return LossOutput((2 - 2 * cos).mean(), {"cosine": cos.mean().detach()})


@register_loss("simsiam")
def simsiam(z1: Tensor, z2: Tensor, stop_gradient: bool = True) -> LossOutput:
    """SimSiam's negative cosine similarity (Chen & He 2021, arXiv 2011.10566, eq. 1).

    ``D(p, z) = −cos(p, sg(z))``, mean over the batch; ``z1`` the prediction, ``z2`` the target.
    The paper's symmetrised loss ``½D(p1, z2) + ½D(p2, z1)`` is composed by the method.

    Range [−1, 1]; collapse gives −1.
    """
    check_embeddings(z1, z2, names=("z1 (prediction)", "z2 (target)"))
    target = z2.detach() if stop_gradient else z2
    cos = _cosine_rows(z1, target)
    return LossOutput(-cos.mean(), {"cosine": cos.mean().detach()})
