"""Setting A3: the mini-batch-as-task Gaussian model, where the optimal task model is Bayes.

A task has N classes (the batch indices); a query is a noisy view of one sample, its label the
index of that sample (GeSSL's task view, arXiv 2405.01053 v4). docs/settings.md §2 [R, verified]:

(a) prototypes ``x_1..x_N`` known, query ``x' = x_a + s ε``: the Bayes posterior (the optimal
    task-specific model) is ``π*_i(x') = softmax_i(−‖x' − x_i‖²/(2s²))``.
(a′) prototypes on a sphere ``‖x_i‖ = R``: ``π* = softmax(x'ᵀx_i / s²)`` — InfoNCE with a
    dot-product critic and temperature ``τ = s²`` is exactly Bayes-optimal.
(b) two noisy views of Gaussian latents ``x_j ~ N(0, c²I)``: candidates ``v_j = x_j + sε'_j``,
    anchor ``u = x_a + sε``; with ``ρ = c²/(c²+s²)``, ``σ_c² = s²(2c²+s²)/(c²+s²)``, the Bayes
    logits are ``(ρ uᵀv_i − ρ²‖v_i‖²/2)/σ_c²`` and ``I(U;V) = −(d/2) log(1 − ρ²)``.

Tensors are float64 torch, shaped ``[tasks, N, d]``, so the library's task view
(:func:`gessl.tasks.task_logits`), losses and σ apply directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gessl.data import TaskBatch

__all__ = [
    "LatentViewSampler",
    "LatentViewTasks",
    "SphereTasks",
    "bayes_augmented_embeddings",
    "latent_view_pair",
]

f64 = torch.float64


@dataclass(frozen=True)
class SphereTasks:
    """Variant (a′): N prototypes uniform on the sphere of radius ``radius`` in R^d, one query
    per class with isotropic noise ``noise`` (= s)."""

    n_classes: int = 16
    dim: int = 5
    noise: float = 0.7
    radius: float = 1.0

    def sample(self, gen: torch.Generator, tasks: int) -> tuple[Tensor, Tensor]:
        """``(queries, prototypes)``, each ``[tasks, N, d]``; query j is drawn from class j."""
        protos = torch.randn(
            tasks, self.n_classes, self.dim, generator=gen, device=gen.device, dtype=f64
        )
        protos = self.radius * protos / protos.norm(dim=-1, keepdim=True)
        noise = torch.randn(
            tasks, self.n_classes, self.dim, generator=gen, device=gen.device, dtype=f64
        )
        return protos + self.noise * noise, protos

    def bayes_logits(self, queries: Tensor, protos: Tensor) -> Tensor:
        """``−‖x' − x_i‖²/(2s²)``, the general form (a); valid off the sphere too."""
        return -torch.cdist(queries, protos).pow(2) / (2 * self.noise**2)

    @property
    def bayes_temperature(self) -> float:
        """τ = s²: the dot-product InfoNCE temperature that is Bayes-optimal on the sphere."""
        return self.noise**2


def latent_view_pair(c2: Any, s2: Any) -> tuple[Any, Any]:
    """``ρ = c²/(c²+s²)`` and ``σ_c² = s²(2c²+s²)/(c²+s²)`` of two views ``x + sε`` of a
    latent of variance ``c²`` (floats or tensors, elementwise): the regression coefficient of one
    view on the other and the conditional variance (variant (b))."""
    return c2 / (c2 + s2), s2 * (2 * c2 + s2) / (c2 + s2)


@dataclass(frozen=True)
class LatentViewTasks:
    """Variant (b): candidates and anchors are two noisy views of Gaussian latents."""

    n_classes: int = 16
    dim: int = 4
    latent_scale: float = 1.0  # c
    noise: float = 0.8  # s

    @property
    def rho(self) -> float:
        return latent_view_pair(self.latent_scale**2, self.noise**2)[0]

    @property
    def cond_var(self) -> float:
        return latent_view_pair(self.latent_scale**2, self.noise**2)[1]

    @property
    def mutual_information(self) -> float:
        """``I(U;V) = −(d/2) log(1 − ρ²)`` (nats)."""
        return -0.5 * self.dim * math.log(1 - self.rho**2)

    def sample(self, gen: torch.Generator, tasks: int) -> tuple[Tensor, Tensor]:
        """``(anchors, candidates)`` ``[tasks, N, d]``; anchor j is a view of latent j."""
        u, v = self.sample_views(gen, tasks, 2)
        return u, v

    def sample_views(self, gen: torch.Generator, tasks: int, views: int) -> tuple[Tensor, ...]:
        """``views`` independent noisy views ``[tasks, N, d]`` of the same latents (the first
        two are :meth:`sample`'s anchors and candidates for the same generator state)."""
        shape = (tasks, self.n_classes, self.dim)
        latent = self.latent_scale * torch.randn(shape, generator=gen, device=gen.device, dtype=f64)
        return tuple(
            latent + self.noise * torch.randn(shape, generator=gen, device=gen.device, dtype=f64)
            for _ in range(views)
        )

    def bayes_logits(self, u: Tensor, v: Tensor) -> Tensor:
        """``(ρ uᵀv_i − ρ²‖v_i‖²/2)/σ_c²``: the density-ratio critic up to a per-anchor constant."""
        rho, var = self.rho, self.cond_var
        return (rho * u @ v.transpose(-1, -2) - 0.5 * rho**2 * v.pow(2).sum(-1)[..., None, :]) / var


def bayes_augmented_embeddings(
    model: LatentViewTasks, u: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """Embeddings whose raw dot product is the Bayes logit of variant (b).

    ``u' = [ρu/σ_c², 1]``, ``v' = [v, −ρ²‖v‖²/(2σ_c²)]``, so ``u'ᵀv' = (ρuᵀv − ρ²‖v‖²/2)/σ_c²``:
    InfoNCE with ``critic="dot"``, ``temperature=1`` on them is the Bayes InfoNCE.
    """
    rho, var = model.rho, model.cond_var
    ones = torch.ones(*u.shape[:-1], 1, dtype=u.dtype, device=u.device)
    ua = torch.cat([rho * u / var, ones], dim=-1)
    va = torch.cat([v, (-0.5 * rho**2 / var) * v.pow(2).sum(-1, keepdim=True)], dim=-1)
    return ua, va


@dataclass(frozen=True)
class LatentViewSampler:
    """Training tasks for :class:`gessl.trainer.Trainer` from variant (b): four independent noisy
    views ``x + sε`` of each latent ``x ~ N(0, c²I_d)`` (float32). The task size N is the
    trainer's; the model's own ``n_classes`` is not used."""

    model: LatentViewTasks

    def sample(self, n_tasks: int, n_samples: int, gen: torch.Generator) -> TaskBatch:
        shape = (n_tasks, n_samples, self.model.dim)
        latent = self.model.latent_scale * torch.randn(shape, generator=gen, device=gen.device)
        return TaskBatch(
            *(
                latent + self.model.noise * torch.randn(shape, generator=gen, device=gen.device)
                for _ in range(4)
            )
        )
