"""The built-in methods. Each is a small class: its extra modules, its loss, its state updates.

Paper constants are the defaults where they make sense at this project's scale; where they do not
(queue length, number of prototypes), the default is small and the paper's value is named in the
docstring.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gessl.losses import (
    barlow_twins,
    byol,
    dino,
    dino_center_update,
    infonce,
    moco,
    nt_xent,
    simsiam,
    spectral,
    swav,
    vicreg,
)
from gessl.methods.base import Method, Params, Targets, _sub, pair_mean, register_method
from gessl.models import ema_update, mlp_head
from gessl.tasks import Critic

__all__ = [
    "BYOL",
    "DINO",
    "BarlowTwins",
    "InfoNCE",
    "MoCo",
    "SimCLR",
    "SimSiam",
    "Spectral",
    "SwAV",
    "VICReg",
]


@register_method
class SimCLR(Method):
    """SimCLR (Chen et al. 2020): NT-Xent on the two views' projections."""

    name = "simclr"
    defaults: ClassVar[dict[str, Any]] = {"temperature": 0.5}

    def loss_from_projections(self, params, za, zb, targets):
        return nt_xent(za, zb, temperature=self.options["temperature"])

    def task_critic(self) -> Critic:
        return Critic("cosine", self.options["temperature"])


@register_method
class InfoNCE(Method):
    """InfoNCE over the N-way task (van den Oord et al. 2018, arXiv 1807.03748): the
    cross-entropy of the task classifier π of :mod:`gessl.tasks` under a named ``critic``, so the
    method trains exactly the classifier that σ measures. ``symmetric`` averages both directions.

    With an identity backbone, a one-layer projector to an even dimension and
    ``critic="two_headed"`` the model family contains the Bayes critic of every task of the
    Gaussian task families (:mod:`theory.task_families`).
    """

    name = "infonce"
    defaults: ClassVar[dict[str, Any]] = {
        "critic": "cosine",
        "temperature": 0.1,
        "symmetric": True,
    }

    def __init__(self, backbone: nn.Module, proj_dims=(64, 32), **options) -> None:
        super().__init__(backbone, proj_dims, **options)
        self.task_critic().check_dim(self.embed_dim)

    def task_critic(self) -> Critic:
        return Critic(self.options["critic"], self.options["temperature"])

    def loss_from_projections(self, params, za, zb, targets):
        o = self.options
        return infonce(
            za, zb, temperature=o["temperature"], critic=o["critic"], symmetric=o["symmetric"]
        )


@register_method
class BarlowTwins(Method):
    """Barlow Twins (Zbontar et al. 2021) on the projections; options as in the loss."""

    name = "barlow_twins"
    defaults: ClassVar[dict[str, Any]] = {"lambda_offdiag": 5e-3, "scale": 1.0}

    def loss_from_projections(self, params, za, zb, targets):
        return barlow_twins(za, zb, **self.options)


@register_method
class VICReg(Method):
    """VICReg (Bardes et al. 2022); ``variance_halving`` for the official code's form."""

    name = "vicreg"
    defaults: ClassVar[dict[str, Any]] = {
        "sim_weight": 25.0,
        "var_weight": 25.0,
        "cov_weight": 1.0,
        "variance_halving": False,
    }

    def loss_from_projections(self, params, za, zb, targets):
        return vicreg(za, zb, **self.options)


@register_method
class Spectral(Method):
    """Spectral contrastive learning (HaoChen et al. 2021); ``projection``/``mu`` as in the loss."""

    name = "spectral"
    defaults: ClassVar[dict[str, Any]] = {"mu": 1.0, "projection": False}

    def loss_from_projections(self, params, za, zb, targets):
        return spectral(za, zb, **self.options)


class _Predictive(Method):
    """Projector followed by a predictor MLP (BYOL, SimSiam)."""

    def __init__(
        self, backbone: nn.Module, proj_dims=(64, 32), pred_hidden: int = 64, **options
    ) -> None:
        super().__init__(backbone, proj_dims, **options)
        self.predictor = mlp_head(
            self.embed_dim, (pred_hidden, self.embed_dim), activation=self.head_activation
        )

    def predict(self, params: Params, z: Tensor) -> Tensor:
        return torch.func.functional_call(self.predictor, _sub(params, "predictor"), (z,))


@register_method
class SimSiam(_Predictive):
    """SimSiam (Chen & He 2021): symmetrised −cos(p, sg(z)), no momentum encoder."""

    name = "simsiam"
    defaults: ClassVar[dict[str, Any]] = {}

    def loss_from_projections(self, params, za, zb, targets):
        pa, pb = self.predict(params, za), self.predict(params, zb)
        return pair_mean(simsiam(pa, zb), simsiam(pb, za))


class _Momentum(Method):
    """A method with an exponential-moving-average copy of backbone + projector."""

    def __init__(self, backbone: nn.Module, proj_dims=(64, 32), **options) -> None:
        super().__init__(backbone, proj_dims, **options)
        self.target_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    @torch.no_grad()
    def target_embed(self, x: Tensor, batched: bool = False) -> Tensor:
        """Target-network embedding of ``[N, ...]`` (or ``[M, N, ...]`` with ``batched``: each
        task separately, so batch-norm statistics never mix tasks)."""

        def one(v: Tensor) -> Tensor:
            return self.target_projector(self.target_backbone(v))

        return torch.func.vmap(one)(x) if batched else one(x)

    @torch.no_grad()
    def momentum_step(self) -> None:
        m = self.options["momentum"]
        online = dict(self.named_parameters())
        for prefix, module in (
            ("backbone", self.target_backbone),
            ("projector", self.target_projector),
        ):
            target = dict(module.named_parameters())
            ema_update(target, _sub(online, prefix), m)

    @torch.no_grad()
    def targets(self, a: Tensor, b: Tensor, batched: bool = False) -> Targets:
        return {"t_a": self.target_embed(a, batched), "t_b": self.target_embed(b, batched)}

    def state_summary(self) -> dict[str, float]:
        return {"momentum": float(self.options["momentum"])}


@register_method
class BYOL(_Momentum, _Predictive):
    """BYOL (Grill et al. 2020): the prediction of each view regresses the target projection of
    the other. ``momentum`` τ = 0.996 (paper's base value; its cosine schedule to 1 is not used)."""

    name = "byol"
    defaults: ClassVar[dict[str, Any]] = {"momentum": 0.996}

    def loss_from_projections(self, params, za, zb, targets):
        pa, pb = self.predict(params, za), self.predict(params, zb)
        return pair_mean(byol(pa, targets["t_b"]), byol(pb, targets["t_a"]))

    def update_state(self, a, b, targets):
        self.momentum_step()


@register_method
class MoCo(_Momentum):
    """MoCo v2 (He et al. 2020; Chen et al. 2020), symmetrised, with a queue of negative keys.

    ``momentum`` 0.999 and τ = 0.2 as in MoCo v2; ``queue_size`` defaults to 4096 (paper: 65536
    on ImageNet). The queue holds keys from earlier outer steps, updated once per outer step.
    """

    name = "moco"
    defaults: ClassVar[dict[str, Any]] = {"momentum": 0.999, "temperature": 0.2, "queue_size": 4096}

    def __init__(self, backbone: nn.Module, proj_dims=(64, 32), **options) -> None:
        super().__init__(backbone, proj_dims, **options)
        gen = torch.Generator().manual_seed(0)
        q = F.normalize(
            torch.randn(self.options["queue_size"], self.embed_dim, generator=gen), dim=1
        )
        self.register_buffer("queue", q)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def task_critic(self) -> Critic:
        return Critic("cosine", self.options["temperature"])

    def loss_from_projections(self, params, qa, qb, targets):
        tau, queue = self.options["temperature"], self.queue.to(qa.dtype)
        return pair_mean(
            moco(qa, targets["t_b"], queue=queue, temperature=tau),
            moco(qb, targets["t_a"], queue=queue, temperature=tau),
        )

    @torch.no_grad()
    def update_state(self, a, b, targets):
        self.momentum_step()
        keys = F.normalize(
            torch.cat(
                [
                    targets["t_a"].reshape(-1, self.embed_dim),
                    targets["t_b"].reshape(-1, self.embed_dim),
                ]
            ),
            dim=1,
        )
        size, ptr = self.queue.shape[0], int(self.queue_ptr)
        keys = keys[-size:]
        idx = (ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + keys.shape[0]) % size)


@register_method
class DINO(_Momentum):
    """DINO (Caron et al. 2021): student vs centred, sharpened EMA teacher over the projector's
    K outputs. ``momentum`` 0.996, ``center_momentum`` 0.9, τ_s 0.1, τ_t 0.04 (paper)."""

    name = "dino"
    defaults: ClassVar[dict[str, Any]] = {
        "momentum": 0.996,
        "center_momentum": 0.9,
        "student_temperature": 0.1,
        "teacher_temperature": 0.04,
    }

    def __init__(self, backbone: nn.Module, proj_dims=(64, 32), **options) -> None:
        super().__init__(backbone, proj_dims, **options)
        self.register_buffer("center", torch.zeros(self.embed_dim))

    def loss_from_projections(self, params, sa, sb, targets):
        kw = {
            "student_temperature": self.options["student_temperature"],
            "teacher_temperature": self.options["teacher_temperature"],
        }
        c = self.center.to(sa.dtype)
        return pair_mean(
            dino(sa, targets["t_b"], center=c, **kw), dino(sb, targets["t_a"], center=c, **kw)
        )

    @torch.no_grad()
    def update_state(self, a, b, targets):
        self.momentum_step()
        teacher = torch.cat(
            [targets["t_a"].reshape(-1, self.embed_dim), targets["t_b"].reshape(-1, self.embed_dim)]
        )
        self.center.copy_(
            dino_center_update(
                self.center, teacher.to(self.center.dtype), self.options["center_momentum"]
            )
        )


@register_method
class SwAV(Method):
    """SwAV (Caron et al. 2020): swapped prediction of Sinkhorn codes over learnable prototypes.
    ``n_prototypes`` defaults to 32 (paper: 3000); τ = 0.1, ε = 0.05, 3 iterations (paper)."""

    name = "swav"
    defaults: ClassVar[dict[str, Any]] = {
        "n_prototypes": 32,
        "temperature": 0.1,
        "epsilon": 0.05,
        "sinkhorn_iterations": 3,
    }

    def __init__(self, backbone: nn.Module, proj_dims=(64, 32), **options) -> None:
        super().__init__(backbone, proj_dims, **options)
        k = self.options["n_prototypes"]
        self.prototypes = nn.Parameter(torch.randn(k, self.embed_dim) / math.sqrt(self.embed_dim))

    def loss_from_projections(self, params, za, zb, targets):
        opts = {k: v for k, v in self.options.items() if k != "n_prototypes"}
        return swav(
            za,
            zb,
            prototypes=params["prototypes"],
            **opts,
        )
