"""SSL losses as pure functions of embeddings, with a registry and property cards.

Every loss is called as ``fn(z1, z2, **options)`` on two ``[N, D]`` batches and returns a
:class:`LossOutput` (``.loss``, a 0-dim tensor, and ``.terms``, named 0-dim tensors). Defaults are
the source papers' constants; official-code deviations are named options.

>>> import torch
>>> from gessl.losses import get_loss
>>> z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
>>> out = get_loss("vicreg")(z1, z2)
>>> sorted(out.terms)
['covariance', 'invariance', 'variance']
"""

from gessl.losses._base import (
    LossFn,
    LossOutput,
    available_losses,
    builtin_card_path,
    get_loss,
    no_value_checks,
    register_loss,
)
from gessl.losses.clustering import dino, dino_center_update, sinkhorn_knopp, swav
from gessl.losses.contrastive import infonce, moco, nt_xent
from gessl.losses.predictive import byol, simsiam
from gessl.losses.redundancy import barlow_twins, off_diagonal, vicreg
from gessl.losses.spectral import project_to_ball, spectral

__all__ = [
    "LossFn",
    "LossOutput",
    "available_losses",
    "barlow_twins",
    "builtin_card_path",
    "byol",
    "dino",
    "dino_center_update",
    "get_loss",
    "infonce",
    "moco",
    "no_value_checks",
    "nt_xent",
    "off_diagonal",
    "project_to_ball",
    "register_loss",
    "simsiam",
    "sinkhorn_knopp",
    "spectral",
    "swav",
    "vicreg",
]
