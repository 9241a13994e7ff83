"""Contrastive losses: InfoNCE (the task view), NT-Xent (SimCLR) and MoCo (queue of negatives).

All three are cross-entropies on logits computed with log-sum-exp (``F.cross_entropy``), never
``log(exp(a) / sum(exp(b)))``, so they stay finite at small temperatures in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gessl.losses._base import (
    LossOutput,
    check_choice,
    check_embeddings,
    check_extra,
    check_positive,
    register_loss,
)
from gessl.tasks import CRITICS, task_labels, task_logits

__all__ = ["infonce", "moco", "nt_xent"]


@register_loss("infonce")
def infonce(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.07,
    critic: str = "cosine",
    symmetric: bool = False,
) -> LossOutput:
    """One-directional InfoNCE over N cross-view candidates: the N-way task loss.

    ``ℓ_i = logsumexp_j(s_ij) − s_ii`` with ``s_ij = critic(z1_i, z2_j)`` (divided by τ); the mean
    over the N anchors (van den Oord et al. 2018, arXiv 1807.03748, eq. 4, with candidates taken
    from the other view of the batch). This is exactly the N-way classification task of
    :mod:`gessl.tasks` with labels ``arange(N)``.

    Args:
        z1, z2: ``[N, D]`` embeddings of two views; row ``i`` of each comes from sample ``i``.
            ``[T, N, D]`` evaluates T tasks at once and returns the mean over tasks.
        temperature: τ > 0. Default 0.07 (Wu et al. 2018 / MoCo; the GeSSL authors' PID-SSL code,
            ``docs/reconstruction.md``). CPC itself has no temperature.
        critic: a named critic of :mod:`gessl.tasks` — ``"cosine"`` (default), ``"dot"`` (the
            raw inner product, under which InfoNCE with τ = s² is Bayes-optimal for prototypes on
            a sphere, ``docs/settings.md``), ``"neg_sq_distance"`` or ``"two_headed"`` (the
            asymmetric distance critic that represents the Gaussian task families' Bayes critics
            with a linear encoder; even D).
        symmetric: average with the other direction ``(L(z1, z2) + L(z2, z1)) / 2``.

    Terms: ``z1_to_z2`` (and ``z2_to_z1`` if symmetric).
    Collapse (all embeddings equal): exactly ``log N``.
    """
    check_embeddings(z1, z2, allow_tasks=True)
    check_positive("temperature", temperature)
    check_choice("critic", critic, CRITICS)

    def ce(a: Tensor, b: Tensor) -> Tensor:
        # the labels are arange(N): the cross-entropy is the mean of −log π on the diagonal
        # (log_softmax is log-sum-exp; no nll_loss, which vmap runs as a Python decomposition)
        lp = torch.log_softmax(task_logits(a, b, temperature, critic), dim=-1)
        return -lp.diagonal(dim1=-2, dim2=-1).mean()

    l12 = ce(z1, z2)
    if not symmetric:
        return LossOutput(l12, {"z1_to_z2": l12})
    l21 = ce(z2, z1)
    return LossOutput((l12 + l21) / 2, {"z1_to_z2": l12, "z2_to_z1": l21})


@register_loss("nt_xent")
def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> LossOutput:
    """SimCLR's NT-Xent loss over 2N views (Chen et al. 2020, arXiv 2002.05709, eq. 1).

    The 2N embeddings are L2-normalised; anchor ``i`` has positive ``i+N (mod 2N)`` and 2N−1
    candidates: its own similarity is masked with ``-inf`` (masking with 0 would leave
    an ``e^0`` term in the denominator and bias the loss). The loss is the mean over all 2N anchors.

    Args:
        temperature: τ > 0; default 0.5, SimCLR's CIFAR-10 setting.

    Terms: ``positive_similarity`` (mean cosine of positive pairs, detached; for monitoring).
    Collapse: exactly ``log(2N − 1)``.
    """
    check_embeddings(z1, z2)
    check_positive("temperature", temperature)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(2 * n, device=z.device)
    labels = (idx + n) % (2 * n)
    loss = F.cross_entropy(logits, labels)
    pos = (z[:n] * z[n:]).sum(dim=1).mean().detach()
    return LossOutput(loss, {"positive_similarity": pos})


@register_loss("moco")
def moco(
    z1: Tensor,
    z2: Tensor,
    queue: Tensor | None = None,
    temperature: float = 0.2,
) -> LossOutput:
    """MoCo's InfoNCE with a queue of negatives (He et al. 2020, arXiv 1911.05722, eq. 1).

    ``z1`` are queries (online encoder), ``z2`` the keys (momentum encoder; a stop-gradient is
    applied here, as the key encoder is never updated by backprop). Anchor ``i`` scores its key
    ``z2_i`` against the K queue entries; the positive is class 0 of a (1+K)-way softmax.
    With ``queue=None`` the other keys of the batch are the negatives (MoCo v3, Chen et al. 2021,
    arXiv 2104.02057), which equals :func:`infonce` with a stop-gradient on ``z2``.

    Args:
        queue: ``[K, D]`` negative keys (the method keeps and updates it; this function only reads).
        temperature: τ > 0; default 0.2, the MoCo v2 value (MoCo v1 used 0.07).

    Collapse (queries, keys and queue all equal): exactly ``log(1 + K)``.
    """
    check_embeddings(z1, z2)
    check_positive("temperature", temperature)
    q = F.normalize(z1, dim=1)
    k = F.normalize(z2.detach(), dim=1)
    if queue is None:
        logits = q @ k.T / temperature
        labels = task_labels(q.shape[0], device=q.device)
    else:
        check_extra(queue, "queue", z1.shape[1], z1)
        neg = F.normalize(queue.detach(), dim=1)
        pos = (q * k).sum(dim=1, keepdim=True)
        logits = torch.cat([pos, q @ neg.T], dim=1) / temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    loss = F.cross_entropy(logits, labels)
    return LossOutput(loss, {"positive_similarity": (q * k).sum(dim=1).mean().detach()})
