"""σ bounds accuracy: the accuracy lost by any task classifier is at most √(2σ) per query.

Setting: an N-way task (the mini-batch task of :mod:`theory.gaussian_task` and
:mod:`theory.task_families`) with Bayes posterior π*(·|x) and any classifier π(·|x). The
accuracy of the decision ``î(x) = argmax π(x)`` is ``acc(π) = E_x π*(î(x) | x)`` (the label of
a query is drawn from π*). Derived here [R] (``docs/settings.md`` §9), per query, with
``i* = argmax π*``:

1. **Decision gap ≤ 2 TV.** ``π*_{i*} − π*_{î} ≤ (π*_{i*} − π_{i*}) + (π_{î} − π*_{î})
   ≤ Σ_k |π_k − π*_k| = 2 TV(π, π*)``, because ``π_{i*} ≤ π_{î}``. The gap is ≥ 0 since i* is
   the Bayes decision.
2. **Pinsker.** ``2 TV ≤ √(2 KL)``, in either direction of KL.
3. **Jensen.** ``E √(2 KL) ≤ √(2 E KL)``.

So ``0 ≤ acc(π*) − acc(π) ≤ E 2TV ≤ E √(2 KL) ≤ √(2σ)`` with σ the expected KL per query: the
paper's direction ``KL(π ‖ π*)`` (:func:`gessl.sigma.sigma`) or the reverse
``KL(π* ‖ π)`` (:func:`gessl.sigma.sigma_excess`). Step 1 is attained by a critic that moves
the smallest possible mass to flip the decision (:func:`flip_log_probs`), and step 2 is tight
for small differences between near-uniform top classes, so the chain is not vacuous.

Everything works on log-probabilities ``[tasks, queries, N]`` (float64 torch); the labels of the
queries of :mod:`theory.gaussian_task` and :mod:`theory.task_families` are ``arange(N)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gessl.adapt import Adapter
from gessl.losses import infonce
from gessl.sigma import kl_rows

__all__ = [
    "AccuracyChain",
    "accuracy_chain",
    "accuracy_gap_bound",
    "fit_bilinear_critic",
    "fit_cosine_temperature",
    "flip_log_probs",
]


def accuracy_gap_bound(sigma_per_query: float | Tensor) -> float | Tensor:
    """``√(2σ)``: the bound on ``acc(π*) − acc(π)`` from σ nats of KL per query (a float, or
    elementwise for a tensor of per-query KLs: Pinsker's ``2 TV ≤ √(2 KL)``)."""
    if isinstance(sigma_per_query, Tensor):
        if bool((sigma_per_query < 0).any()) or bool(sigma_per_query.isnan().any()):
            raise ValueError("σ per query must be >= 0")
        return torch.sqrt(2.0 * sigma_per_query)
    if not sigma_per_query >= 0:
        raise ValueError(f"σ per query must be >= 0, got {sigma_per_query!r}")
    return math.sqrt(2.0 * sigma_per_query)


@dataclass(frozen=True)
class AccuracyChain:
    """Per-query terms of the chain, each ``[tasks, queries]`` (float64).

    Attributes:
        gap: ``π*_{i*} − π*_{î}``, the expected accuracy lost on the query.
        tv2: ``Σ_k |π_k − π*_k| = 2 TV``.
        kl: ``KL(π ‖ π*)`` (σ's direction).
        kl_excess: ``KL(π* ‖ π)`` (sigma_excess's direction).
        gap01: ``1[i* = y] − 1[î = y]``, the 0/1 accuracy lost on the query's label y
            (``None`` without labels).
    """

    gap: Tensor
    tv2: Tensor
    kl: Tensor
    kl_excess: Tensor
    gap01: Tensor | None


def _check_pair(log_p_model: Tensor, log_p_bayes: Tensor) -> None:
    if log_p_model.shape != log_p_bayes.shape or log_p_model.dim() != 3:
        raise ValueError(
            "log_p_model and log_p_bayes must both be [tasks, queries, N], got "
            f"{tuple(log_p_model.shape)} and {tuple(log_p_bayes.shape)}"
        )
    if log_p_model.shape[-1] < 2:
        raise ValueError("a task needs N >= 2 classes")
    for name, lp in (("log_p_model", log_p_model), ("log_p_bayes", log_p_bayes)):
        err = float(torch.logsumexp(lp, dim=-1).abs().max())
        if not err <= 1e-9:
            raise ValueError(f"{name} rows are not normalised log-probabilities ({err:.2g})")


def accuracy_chain(
    log_p_model: Tensor, log_p_bayes: Tensor, labels: Tensor | None = None
) -> AccuracyChain:
    """The per-query terms of ``gap ≤ 2TV ≤ √(2KL)`` for a classifier against the Bayes one.

    Args:
        log_p_model: ``[tasks, queries, N]`` log π.
        log_p_bayes: same shape, log π*.
        labels: ``[queries]`` (shared by all tasks) or ``[tasks, queries]`` true classes, for
            the 0/1 accuracy gap.
    """
    _check_pair(log_p_model, log_p_bayes)
    pb, pm = log_p_bayes.exp(), log_p_model.exp()
    i_star = log_p_bayes.argmax(dim=-1, keepdim=True)
    i_hat = log_p_model.argmax(dim=-1, keepdim=True)
    gap = (pb.gather(-1, i_star) - pb.gather(-1, i_hat)).squeeze(-1)
    gap01 = None
    if labels is not None:
        y = labels.expand(gap.shape)
        gap01 = (i_star.squeeze(-1) == y).to(gap.dtype) - (i_hat.squeeze(-1) == y).to(gap.dtype)
    return AccuracyChain(
        gap=gap,
        tv2=(pm - pb).abs().sum(dim=-1),
        kl=kl_rows(log_p_model, log_p_bayes),
        kl_excess=kl_rows(log_p_bayes, log_p_model),
        gap01=gap01,
    )


def flip_log_probs(log_p_bayes: Tensor, margin: float = 1e-3) -> Tensor:
    """The smallest change of π* that flips its decision: the top two probabilities p₁ ≥ p₂ are
    replaced by ``m ∓ margin·(p₁ − p₂)/2`` with ``m = (p₁ + p₂)/2`` (the runner-up wins), all
    others kept. Its decision gap is ``p₁ − p₂`` and its ``2 TV`` is ``(1 + margin)(p₁ − p₂)``:
    step 1 of the chain is attained up to the factor ``1 + margin``.
    """
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), got {margin!r}")
    p = log_p_bayes.exp()
    top = p.topk(2, dim=-1)
    p1, p2 = top.values[..., 0], top.values[..., 1]
    mid, half = (p1 + p2) / 2, margin * (p1 - p2) / 2
    q = p.clone()
    q.scatter_(-1, top.indices[..., :1], (mid - half).unsqueeze(-1))
    q.scatter_(-1, top.indices[..., 1:], (mid + half).unsqueeze(-1))
    return torch.log(q)


def _descend(param: Tensor, loss_fn: Callable[[Tensor], Tensor], steps: int, lr: float) -> Tensor:
    """Plain gradient descent on ``loss_fn(param)`` from ``param`` (no optimiser state): the
    adaptation engine's SGD loop (:class:`gessl.adapt.Adapter`) on one tensor."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    state = Adapter.start({"x": param.detach().clone()})
    state, _ = Adapter({}).sgd(state, steps, lambda p: loss_fn(p["x"]), lr, detach=True)
    return state["dense"]["x"].detach()


def fit_bilinear_critic(anchors: Tensor, candidates: Tensor, steps: int, lr: float = 0.3) -> Tensor:
    """A bilinear critic ``uᵀMv`` trained by gradient descent on the library's InfoNCE loss
    (:func:`gessl.losses.infonce`, dot critic, τ = 1) over ``[tasks, N, d]`` training views,
    from ``M = 0``. Returns ``M`` (``[d, d]``)."""
    d = anchors.shape[-1]

    def loss(m: Tensor) -> Tensor:
        return infonce(anchors @ m, candidates, temperature=1.0, critic="dot").loss

    return _descend(torch.zeros(d, d, dtype=anchors.dtype), loss, steps, lr)


def fit_cosine_temperature(
    anchors: Tensor, candidates: Tensor, steps: int, lr: float = 0.3
) -> float:
    """The temperature τ of a cosine critic fitted by gradient descent on log(1/τ) against the
    library's InfoNCE loss (dot critic on unit vectors scaled by 1/τ), from τ = 1."""
    za = anchors / anchors.norm(dim=-1, keepdim=True)
    zc = candidates / candidates.norm(dim=-1, keepdim=True)

    def loss(log_inv_tau: Tensor) -> Tensor:
        return infonce(za * log_inv_tau.exp(), zc, temperature=1.0, critic="dot").loss

    return float(torch.exp(-_descend(torch.zeros((), dtype=anchors.dtype), loss, steps, lr)))
